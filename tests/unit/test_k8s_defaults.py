"""OperatorDefaults from the environment the operator Deployment (and `rlkd render`) gets."""

from __future__ import annotations

import pytest

from rlkd.errors import SpecError
from rlkd.k8s import OperatorDefaults
from rlkd.k8s.defaults import TRAINER_IMAGE, VLLM_IMAGE
from rlkd.spec.job import StorageSpec

ENDPOINT = {"RLKD_DEFAULT_STORAGE_ENDPOINT": "http://minio.rlkd-system:9000"}
STORE_ENV = {**ENDPOINT, "RLKD_DEFAULT_STORAGE_BUCKET": "rlkd"}


def test_vllm_image_is_pinned_upstream() -> None:
    image, _, tag = VLLM_IMAGE.partition(":")
    assert image == "vllm/vllm-openai" and tag.startswith("v") and tag != "latest"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, OperatorDefaults(VLLM_IMAGE, TRAINER_IMAGE, None)),
        ({"RLKD_VLLM_IMAGE": "", "RLKD_DEFAULT_STORAGE_PREFIX": ""}, OperatorDefaults()),
        (
            {"RLKD_VLLM_IMAGE": "mirror/vllm:v1", "RLKD_TRAINER_IMAGE": "mirror/trainer:v1"},
            OperatorDefaults("mirror/vllm:v1", "mirror/trainer:v1"),
        ),
        (
            STORE_ENV,
            OperatorDefaults(
                storage=StorageSpec(endpoint="http://minio.rlkd-system:9000", bucket="rlkd")
            ),
        ),
        (
            {
                **STORE_ENV,
                "RLKD_DEFAULT_STORAGE_PREFIX": "team/runs",
                "RLKD_DEFAULT_STORAGE_REGION": "eu-1",
                "RLKD_DEFAULT_STORAGE_CREDENTIALS_SECRET": "s3-keys",
                "RLKD_OPERATOR_NAMESPACE": "rlkd-system",
            },
            OperatorDefaults(
                storage=StorageSpec(
                    endpoint="http://minio.rlkd-system:9000",
                    bucket="rlkd",
                    prefix="team/runs",
                    region="eu-1",
                    credentials_secret="s3-keys",
                ),
                namespace="rlkd-system",
            ),
        ),
    ],
)
def test_from_env(env: dict[str, str], expected: OperatorDefaults) -> None:
    assert OperatorDefaults.from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "problems"),
    [
        (
            ENDPOINT,
            ["RLKD_DEFAULT_STORAGE_BUCKET: is required when any RLKD_DEFAULT_STORAGE_* is set"],
        ),
        (
            {"RLKD_DEFAULT_STORAGE_CREDENTIALS_SECRET": "keys"},
            [
                "RLKD_DEFAULT_STORAGE_ENDPOINT: is required when any RLKD_DEFAULT_STORAGE_* is set",
                "RLKD_DEFAULT_STORAGE_BUCKET: is required when any RLKD_DEFAULT_STORAGE_* is set",
            ],
        ),
        (
            {**STORE_ENV, "RLKD_DEFAULT_STORAGE_ENDPOINT": "minio:9000"},
            [
                "RLKD_DEFAULT_STORAGE_ENDPOINT: must be an http:// or https:// URL without a path,"
                " e.g. http://minio.rlkd-system:9000"
            ],
        ),
        (
            {**STORE_ENV, "RLKD_DEFAULT_STORAGE_BUCKET": "My_Bucket"},
            [
                "RLKD_DEFAULT_STORAGE_BUCKET: must be a valid S3 bucket name: may hold only"
                " lowercase letters, digits, dots and hyphens"
            ],
        ),
        (
            {**STORE_ENV, "RLKD_DEFAULT_STORAGE_BUCKET": "a..b"},
            ["RLKD_DEFAULT_STORAGE_*: bucket: must not contain two adjacent dots"],
        ),
        (
            {**STORE_ENV, "RLKD_DEFAULT_STORAGE_CREDENTIALS_SECRET": "s3-keys"},
            [
                "RLKD_OPERATOR_NAMESPACE: is required when RLKD_DEFAULT_STORAGE_CREDENTIALS_SECRET"
                " is set: name the namespace that holds that Secret (the chart sets it to the"
                " operator's own)"
            ],
        ),
        (
            {"RLKD_OPERATOR_NAMESPACE": "RLKD"},
            [
                "RLKD_OPERATOR_NAMESPACE: must be a DNS-1123 label: at most 63 lowercase letters,"
                " digits and '-', starting and ending with a letter or digit"
            ],
        ),
    ],
)
def test_bad_environment_names_the_variable(env: dict[str, str], problems: list[str]) -> None:
    with pytest.raises(SpecError) as caught:
        OperatorDefaults.from_env(env)
    assert caught.value.problems == problems
