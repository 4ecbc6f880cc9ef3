"""Names, labels, URLs and owner references of the children."""

from __future__ import annotations

import re

import pytest

from rlkd.k8s import (
    build_children,
    config_name,
    endpoint_env,
    inference_name,
    labels,
    learner_name,
    owner_references,
    selector_labels,
    service_url,
)
from rlkd.spec.refs import MAX_NAME_LENGTH
from rlkd.spec.runtime import INFERENCE_ROLES
from tests.jobs import DEFAULTS, make_job

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
EVERY_ROLE = {"teacher": {"source": "model", "model": {"model": "deepseek-ai/DeepSeek-R1"}}}


def test_names() -> None:
    job = make_job()
    assert learner_name(job) == "demo"
    assert config_name(job) == "demo-config"
    assert [inference_name(job, r) for r in INFERENCE_ROLES] == [
        "demo-gsrm",
        "demo-judge",
        "demo-teacher",
        "demo-rollout",
        "demo-annotator",
    ]


def test_longest_job_name_leaves_every_service_a_dns_label() -> None:
    job = make_job(name="a" * MAX_NAME_LENGTH)
    for role in INFERENCE_ROLES:
        assert DNS_LABEL.match(inference_name(job, role))
    # The training operator names the learner's pods and Services <job>-worker-<index>.
    assert DNS_LABEL.match(f"{learner_name(job)}-worker-511")


@pytest.mark.parametrize(
    ("namespace", "url"),
    [
        ("team-a", "http://demo-judge.team-a.svc:8000/v1"),
        (None, "http://demo-judge.default.svc:8000/v1"),
    ],
)
def test_service_url(namespace: str | None, url: str) -> None:
    assert service_url(make_job(namespace=namespace), "judge") == url


def test_endpoint_env_names_the_role() -> None:
    assert [endpoint_env(r) for r in INFERENCE_ROLES] == [
        "RLKD_GSRM_URL",
        "RLKD_JUDGE_URL",
        "RLKD_TEACHER_URL",
        "RLKD_ROLLOUT_URL",
        "RLKD_ANNOTATOR_URL",
    ]


def test_every_child_is_labelled_and_inference_children_name_their_role() -> None:
    job = make_job(EVERY_ROLE)
    children = build_children(job, DEFAULTS)
    for manifest in children.all():
        assert manifest["metadata"]["namespace"] == "team-a"
        assert manifest["metadata"]["labels"]["rlkd.ai/job"] == "demo"
        assert manifest["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    for role, child in children.inference.items():
        for manifest in (child.deployment, child.service):
            assert manifest["metadata"]["labels"] == labels(job, "inference", role)
            assert manifest["metadata"]["labels"]["rlkd.ai/role"] == role
        assert child.service["spec"]["selector"] == selector_labels(job, role)
        assert child.deployment["spec"]["selector"]["matchLabels"] == selector_labels(job, role)
        pod_labels = child.deployment["spec"]["template"]["metadata"]["labels"]
        assert selector_labels(job, role).items() <= pod_labels.items()
    assert "rlkd.ai/role" not in children.config["metadata"]["labels"]
    assert "rlkd.ai/role" not in children.learner["metadata"]["labels"]


def test_selectors_tell_roles_and_jobs_apart() -> None:
    one, other = make_job(), make_job(name="other")
    selectors = [selector_labels(j, r) for j in (one, other) for r in INFERENCE_ROLES]
    assert len({tuple(sorted(s.items())) for s in selectors}) == len(selectors)


@pytest.mark.parametrize(
    ("uid", "owners"),
    [
        (None, []),
        (
            "0b6c2a8e-1f3d-4c5e-9a7b-2d4f6e8a0c1e",
            [
                {
                    "apiVersion": "rlkd.ai/v1alpha1",
                    "kind": "RLKDJob",
                    "name": "demo",
                    "uid": "0b6c2a8e-1f3d-4c5e-9a7b-2d4f6e8a0c1e",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        ),
    ],
)
def test_owner_references_are_set_when_the_uid_is_known(uid: str | None, owners: list) -> None:
    job = make_job(EVERY_ROLE, uid=uid)
    assert owner_references(job) == owners
    for manifest in build_children(job, DEFAULTS).all():
        assert manifest["metadata"].get("ownerReferences", []) == owners
