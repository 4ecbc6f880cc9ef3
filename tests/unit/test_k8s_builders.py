"""Table tests of the builders: which children a spec gets and what in them follows the spec."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.errors import SpecError
from rlkd.k8s import OperatorDefaults, build_children, inference_roles
from rlkd.k8s.inference import role_server
from rlkd.k8s.resolve import model_uri
from rlkd.spec.job import StorageSpec
from tests.jobs import DEFAULTS, STORE, make_job

ROLLOUT_CPU = {"rollout": {"mode": "transformers"}}
RESTRICTED_ENV = {"HOME": "/home/rlkd", "USER": "rlkd"}
"""What `pods.security: restricted` (the default) adds to every container's env."""


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    template = manifest["spec"]["template"]
    return template["spec"]["containers"][0]


def learner_pod(children: Any, kind: str = "Master") -> dict[str, Any]:
    return children.learner["spec"]["pytorchReplicaSpecs"][kind]["template"]["spec"]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


@pytest.mark.parametrize(
    ("spec", "roles"),
    [
        ({}, ["gsrm", "judge", "rollout"]),
        (ROLLOUT_CPU, ["gsrm", "judge"]),
        ({"rollout": {"mode": "colocate"}}, ["gsrm", "judge"]),
        ({"gsrm": {"backend": "rule"}, "judge": {"backend": "transformers"}}, ["rollout"]),
        (
            {"judge": {"backend": "openai", "url": "http://judge.llm:8000/v1"}, **ROLLOUT_CPU},
            ["gsrm"],
        ),
        (
            {"teacher": {"source": "model", "model": {"model": "deepseek-ai/DeepSeek-R1"}}},
            ["gsrm", "judge", "teacher", "rollout"],
        ),
        (
            {"teacher": {"source": "model", "model": {"model": "x/y", "backend": "transformers"}}},
            ["gsrm", "judge", "rollout"],
        ),
        (
            {"rewards": {"structure": 0}, "gsrm": None, "judge": None, **ROLLOUT_CPU},
            [],
        ),
    ],
)
def test_inference_roles(spec: dict[str, Any], roles: list[str]) -> None:
    job = make_job(spec)
    assert inference_roles(job.spec) == roles
    children = build_children(job, DEFAULTS)
    assert list(children.inference) == roles
    assert [c.role for c in children.inference.values()] == roles


def test_role_without_a_server_is_refused() -> None:
    with pytest.raises(ValueError, match="'rollout' needs no vLLM server"):
        role_server(make_job(ROLLOUT_CPU).spec, "rollout")


def test_all_is_in_apply_order() -> None:
    children = build_children(make_job(), DEFAULTS)
    kinds = [(m["kind"], m["metadata"]["name"]) for m in children.all()]
    assert kinds == [
        ("ConfigMap", "demo-config"),
        ("NetworkPolicy", "demo-inference"),
        ("Service", "demo-gsrm"),
        ("Deployment", "demo-gsrm"),
        ("Service", "demo-judge"),
        ("Deployment", "demo-judge"),
        ("Service", "demo-rollout"),
        ("Deployment", "demo-rollout"),
        ("Job", "demo-prepare"),
        ("PyTorchJob", "demo"),
    ]


def test_builders_are_deterministic_and_share_nothing() -> None:
    job = make_job()
    first, second = build_children(job, DEFAULTS), build_children(job, DEFAULTS)
    assert first == second
    first.inference["gsrm"].deployment["spec"]["template"]["spec"]["volumes"].clear()
    assert build_children(job, DEFAULTS) == second


def test_vllm_container_follows_the_spec() -> None:
    spec = {
        "judge": {
            "servedModelName": "qwen-judge",
            "vllm": {
                "image": "registry.local/vllm:pinned",
                "tensorParallelSize": 2,
                "maxModelLen": 16384,
                "gpuMemoryUtilization": 0.85,
                "dtype": "bfloat16",
                "extraArgs": ["--enable-prefix-caching"],
                "nodeSelector": {"gpu": "h100"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                "resources": {"cpu": "8", "memory": "64Gi"},
            },
        }
    }
    deployment = build_children(make_job(spec), DEFAULTS).inference["judge"].deployment
    c = container(deployment)
    assert c["image"] == "registry.local/vllm:pinned"
    assert c["command"] == ["vllm", "serve"]
    assert c["args"] == [
        "Qwen/Qwen2.5-7B-Instruct",
        "--served-model-name",
        "qwen-judge",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--tensor-parallel-size",
        "2",
        "--gpu-memory-utilization",
        "0.85",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "16384",
        "--enable-prefix-caching",
    ]
    assert env_of(c) == RESTRICTED_ENV  # a hub model needs no store access
    amounts = {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}  # canonical, as stored
    assert c["resources"] == {"requests": amounts, "limits": amounts}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"gpu": "h100"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    assert pod["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        {"name": "home", "emptyDir": {}},
    ]
    assert c["volumeMounts"] == [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "home", "mountPath": "/home/rlkd"},
    ]
    assert c["startupProbe"]["httpGet"]["path"] == c["readinessProbe"]["httpGet"]["path"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"


def test_role_name_is_the_default_served_model_name_and_image_comes_from_defaults() -> None:
    c = container(build_children(make_job(), DEFAULTS).inference["gsrm"].deployment)
    assert c["args"][1:3] == ["--served-model-name", "gsrm"]
    assert c["image"] == DEFAULTS.vllm_image


@pytest.mark.parametrize(
    ("ref", "prefix", "uri"),
    [
        ("store://models/gsrm", "rlkd", "s3://rlkd-artifacts/rlkd/models/gsrm"),
        ("store://models/gsrm", "", "s3://rlkd-artifacts/models/gsrm"),
        ("store://models/gsrm/", "team/a", "s3://rlkd-artifacts/team/a/models/gsrm/"),
        ("s3://other-bucket/m", "rlkd", "s3://other-bucket/m"),
        ("/models/baked-in", "rlkd", "/models/baked-in"),
        ("Qwen/Qwen2.5-7B-Instruct", "rlkd", "Qwen/Qwen2.5-7B-Instruct"),
    ],
)
def test_model_uri(ref: str, prefix: str, uri: str) -> None:
    assert model_uri(ref, STORE.model_copy(update={"prefix": prefix})) == uri


def test_models_in_the_store_are_streamed_with_the_secret_by_reference() -> None:
    store = STORE.model_copy(update={"region": "eu-1"})
    job = make_job({"storage": store.to_dict()})
    c = container(build_children(job, DEFAULTS).inference["gsrm"].deployment)
    assert c["args"][0] == "s3://rlkd-artifacts/rlkd/models/gsrm"
    assert c["args"][-2:] == ["--load-format", "runai_streamer"]
    secret = {"name": "rlkd-s3-credentials"}
    assert env_of(c) == {
        "AWS_ENDPOINT_URL": "http://minio.rlkd-system.svc:9000",
        "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
        "AWS_REGION": "eu-1",
        "AWS_DEFAULT_REGION": "eu-1",
        "AWS_ACCESS_KEY_ID": {"secretKeyRef": {**secret, "key": "AWS_ACCESS_KEY_ID"}},
        "AWS_SECRET_ACCESS_KEY": {"secretKeyRef": {**secret, "key": "AWS_SECRET_ACCESS_KEY"}},
        "AWS_EC2_METADATA_DISABLED": "true",
        **RESTRICTED_ENV,
    }


def test_store_without_a_secret_leaves_credentials_to_the_pod_identity() -> None:
    store = StorageSpec(endpoint="https://s3.eu-west-1.amazonaws.com", bucket="team-bucket")
    children = build_children(make_job({"storage": store.to_dict()}), DEFAULTS)
    names = set(env_of(container(children.inference["gsrm"].deployment)))
    assert names == {
        "AWS_ENDPOINT_URL",
        "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING",
        *RESTRICTED_ENV,
    }
    pod = learner_pod(children)
    assert [v["name"] for v in pod["volumes"]] == ["dshm", "config", "home"]


def test_rollout_server_serves_the_student_with_weight_transfer() -> None:
    c = container(build_children(make_job(), DEFAULTS).inference["rollout"].deployment)
    assert c["args"][0] == "Qwen/Qwen2.5-Math-7B"
    assert c["args"][-6:] == [
        "--weight-transfer-config",
        '{"backend": "nccl"}',
        "--logprobs-mode",
        "processed_logprobs",
        "--max-logprobs",
        "-1",
    ]
    assert env_of(c) == {"VLLM_SERVER_DEV_MODE": "1", **RESTRICTED_ENV}


@pytest.mark.parametrize(
    ("suspend", "override", "replicas"),
    [
        (False, None, 3),
        (False, 0, 0),
        (False, 1, 1),
        (True, None, 0),
        (True, 2, 0),
    ],
)
def test_inference_replicas_scale_to_zero(
    suspend: bool, override: int | None, replicas: int
) -> None:
    three = {"vllm": {"replicas": 3}}
    job = make_job(
        {"suspend": suspend, "gsrm": three, "judge": three, "rollout": {"mode": "colocate"}}
    )
    children = build_children(job, DEFAULTS, inference_replicas=override)
    assert {c.deployment["spec"]["replicas"] for c in children.inference.values()} == {replicas}
    assert children.learner["spec"]["runPolicy"]["suspend"] is suspend


def test_negative_inference_replicas_are_refused() -> None:
    with pytest.raises(ValueError, match="inference_replicas must be >= 0"):
        build_children(make_job(), DEFAULTS, inference_replicas=-1)


@pytest.mark.parametrize(("replicas", "kinds"), [(1, ["Master"]), (4, ["Master", "Worker"])])
def test_learner_has_a_master_and_the_rest_workers(replicas: int, kinds: list[str]) -> None:
    learner = build_children(make_job({"learner": {"replicas": replicas}}), DEFAULTS).learner
    specs = learner["spec"]["pytorchReplicaSpecs"]
    assert list(specs) == kinds
    assert sum(s["replicas"] for s in specs.values()) == replicas
    assert {s["restartPolicy"] for s in specs.values()} == {"OnFailure"}


def test_learner_follows_the_spec() -> None:
    spec = {
        "learner": {
            "image": "registry.local/trainer:1",
            "gpusPerReplica": 8,
            "backoffLimit": 7,
            "resources": {"cpu": "64"},
            "nodeSelector": {"pool": "train"},
        },
        "storage": {**STORE.to_dict(), "prefix": "runs", "region": "us-east-1"},
    }
    children = build_children(make_job(spec), DEFAULTS)
    learner = children.learner
    assert (learner["apiVersion"], learner["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert learner["metadata"]["name"] == "demo"
    assert learner["spec"]["nprocPerNode"] == "8"
    assert learner["spec"]["runPolicy"] == {
        "backoffLimit": 7,
        "cleanPodPolicy": "Running",
        "suspend": False,
    }
    pod = learner_pod(children)
    [c] = pod["containers"]
    assert (c["name"], c["image"], c["command"]) == (
        "pytorch",
        "registry.local/trainer:1",
        ["rlkd", "train"],
    )
    assert c["resources"]["limits"] == {"cpu": "64", "nvidia.com/gpu": "8"}
    assert pod["nodeSelector"] == {"pool": "train"}
    assert env_of(c) == {
        "RLKD_JOB_FILE": "/etc/rlkd/job.yaml",
        "RLKD_DEEPSPEED_FILE": "/etc/rlkd/deepspeed.json",
        "RLKD_STORE_ENDPOINT": "http://minio.rlkd-system.svc:9000",
        "RLKD_STORE_BUCKET": "rlkd-artifacts",
        "RLKD_STORE_PREFIX": "runs/team-a/demo",
        "RLKD_STORE_REGION": "us-east-1",
        "RLKD_GSRM_URL": "http://demo-gsrm.team-a.svc:8000/v1",
        "RLKD_JUDGE_URL": "http://demo-judge.team-a.svc:8000/v1",
        "RLKD_ROLLOUT_URL": "http://demo-rollout.team-a.svc:8000",
        **RESTRICTED_ENV,
    }
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == {
        "dshm": "/dev/shm",
        "config": "/etc/rlkd",
        "store-credentials": "/var/run/secrets/rlkd/store",
        "home": "/home/rlkd",
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"] == {"name": "demo-config"}
    assert volumes["store-credentials"]["secret"] == {"secretName": "rlkd-s3-credentials"}


def test_cpu_learner_asks_for_no_gpu() -> None:
    spec = {
        "learner": {"gpusPerReplica": 0, "deepspeed": {"stage": 0}},
        "grpo": {"precision": "fp32"},
        **ROLLOUT_CPU,
    }
    children = build_children(make_job(spec), DEFAULTS)
    assert children.learner["spec"]["nprocPerNode"] == "1"
    assert "resources" not in learner_pod(children)["containers"][0]
    assert "RLKD_ROLLOUT_URL" not in env_of(learner_pod(children)["containers"][0])


def test_learner_image_defaults_from_the_operator() -> None:
    pod = learner_pod(build_children(make_job(), DEFAULTS))
    assert pod["containers"][0]["image"] == DEFAULTS.trainer_image


@pytest.mark.parametrize(
    ("spec_storage", "default_storage", "bucket"),
    [
        (None, STORE, "rlkd-artifacts"),
        ({"endpoint": "http://s3.local:9000", "bucket": "own"}, STORE, "own"),
        ({"endpoint": "http://s3.local:9000", "bucket": "own"}, None, "own"),
    ],
)
def test_storage_comes_from_the_spec_else_the_defaults(
    spec_storage: dict[str, str] | None, default_storage: StorageSpec | None, bucket: str
) -> None:
    defaults = OperatorDefaults(storage=default_storage)
    children = build_children(make_job({"storage": spec_storage}), defaults)
    assert env_of(learner_pod(children)["containers"][0])["RLKD_STORE_BUCKET"] == bucket
    assert f"bucket: {bucket}" in children.config["data"]["job.yaml"]


def test_no_store_anywhere_is_a_spec_error_that_says_how_to_fix_it() -> None:
    with pytest.raises(SpecError) as caught:
        build_children(make_job(), OperatorDefaults())
    [problem] = caught.value.problems
    assert problem.startswith("spec.storage: is required")
    assert "set spec.storage" in problem and "RLKD_DEFAULT_STORAGE_ENDPOINT" in problem


def pod_specs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    if manifest["kind"] == "Deployment":
        return [manifest["spec"]["template"]["spec"]]
    if manifest["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in manifest["spec"]["pytorchReplicaSpecs"].values()]
    return []


def test_credentials_reach_pods_only_by_reference_to_the_secret() -> None:
    children = build_children(make_job({"learner": {"replicas": 2}}), DEFAULTS)
    by_reference = 0
    for manifest in children.all():
        for pod in pod_specs(manifest):
            for variable in pod["containers"][0].get("env", []):
                if variable["name"] in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    assert set(variable) == {"name", "valueFrom"}
                    by_reference += 1
    assert by_reference == 2  # the GSRM streams its model from the store


def test_a_served_role_without_a_model_is_a_spec_error_naming_the_field() -> None:
    """The spec's rules forbid it; a job that went around them (model_copy does not validate)
    still gets an error that names the field, not an assert that `python -O` drops."""
    job = make_job()
    assert job.spec.gsrm is not None
    gsrm = job.spec.gsrm.model_copy(update={"model": None})
    job = job.model_copy(update={"spec": job.spec.model_copy(update={"gsrm": gsrm})})
    with pytest.raises(SpecError, match=r"^spec\.gsrm\.model: is required unless backend is rule"):
        role_server(job.spec, "gsrm")
