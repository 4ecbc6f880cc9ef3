"""The prepare Job: when a job gets one, what its pod runs and calls, and on which hardware."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.k8s import build_children
from rlkd.k8s.batch import BACKOFF_LIMIT
from rlkd.k8s.pods import HOME_DIR
from rlkd.k8s.prepare import prepare_servers
from rlkd.spec.progress import needs_prepare, nothing_to_prepare
from rlkd.spec.runtime import STORE_SECRET_DIR
from tests.jobs import DEFAULTS, make_job

TEACHER = {"source": "model", "model": {"model": "deepseek-ai/DeepSeek-R1"}}
IN_PROCESS = {"source": "model", "model": {"model": "x/teacher", "backend": "transformers"}}
CPU = {
    "rollout": {"mode": "transformers"},
    "learner": {"gpusPerReplica": 0},
    "grpo": {"precision": "fp32"},
}
NO_STRUCTURE = {"rewards": {"structure": 0}, "gsrm": None, "judge": None}


def pod(job_manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job_manifest["spec"]["template"]["spec"]
    return spec


def env_of(manifest: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e["value"] for e in pod(manifest)["containers"][0]["env"]}


@pytest.mark.parametrize(
    ("spec", "reason", "servers"),
    [
        ({}, None, ["gsrm"]),  # teacher paths in the dataset: decomposed with the GSRM
        ({"teacher": TEACHER}, None, ["gsrm", "teacher"]),
        ({"teacher": TEACHER, **NO_STRUCTURE}, None, ["teacher"]),  # sampled only
        ({"teacher": {"source": "decompositions"}}, "teacher.source is decompositions", []),
        ({"rewards": {"structure": 0}}, "rewards.structure is 0", []),
        ({"gsrm": {"backend": "openai", "url": "http://gsrm.llm:8000/v1"}}, None, []),
        ({"teacher": IN_PROCESS}, None, ["gsrm"]),
    ],
)
def test_which_jobs_are_prepared_and_which_servers_the_job_calls(
    spec: dict[str, Any], reason: str | None, servers: list[str]
) -> None:
    job = make_job(spec)
    why = nothing_to_prepare(job.spec)
    assert (why is None, needs_prepare(job.spec)) == (reason is None, reason is None)
    assert reason is None or (why is not None and why.startswith(reason))
    assert prepare_servers(job.spec) == servers
    children = build_children(job, DEFAULTS)
    assert (children.prepare is not None) == (reason is None)
    if children.prepare is not None:  # the servers it calls are exactly those in its env
        urls = {k for k in env_of(children.prepare) if k.endswith("_URL")}
        assert urls == {f"RLKD_{role.upper()}_URL" for role in servers}


def test_the_prepare_job_runs_rlkd_prepare_from_the_env_contract_on_cpu() -> None:
    children = build_children(make_job({"teacher": TEACHER}, uid="u-1"), DEFAULTS)
    job = children.prepare
    assert job is not None
    assert (job["apiVersion"], job["kind"], job["metadata"]["name"]) == (
        "batch/v1",
        "Job",
        "demo-prepare",
    )
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "prepare"
    assert job["metadata"]["labels"]["rlkd.ai/job"] == "demo"
    assert job["spec"]["backoffLimit"] == BACKOFF_LIMIT and job["spec"]["suspend"] is False
    spec = pod(job)
    container = spec["containers"][0]
    assert spec["restartPolicy"] == "Never" and container["command"] == ["rlkd", "prepare"]
    assert container["image"] == DEFAULTS.trainer_image
    assert "resources" not in container and "nodeSelector" not in spec  # every role is a server
    learner = children.learner["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    learner_env = {e["name"]: e["value"] for e in learner["containers"][0]["env"]}
    env = env_of(job)
    assert env["RLKD_JOB_FILE"] == "/etc/rlkd/job.yaml"
    for name in ("RLKD_JOB_FILE", "RLKD_STORE_ENDPOINT", "RLKD_STORE_BUCKET", "RLKD_STORE_PREFIX"):
        assert env[name] == learner_env[name]
    assert env["RLKD_TEACHER_URL"] == "http://demo-teacher.team-a.svc:8000/v1"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/rlkd", STORE_SECRET_DIR, HOME_DIR}  # HOME: the restricted default
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "demo-config"
    # The job's copy of the default store's Secret (rlkd.k8s.store_secret).
    assert volumes["store-credentials"]["secret"]["secretName"] == "demo-store-credentials"


def test_a_model_loaded_in_process_gets_the_learners_gpus_and_placement() -> None:
    learner = {
        "gpusPerReplica": 4,
        "nodeSelector": {"gpu": "h100"},
        "resources": {"cpu": "8", "memory": "64Gi"},
    }
    job = build_children(make_job({"teacher": IN_PROCESS, "learner": learner}), DEFAULTS).prepare
    assert job is not None
    container = pod(job)["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"  # canonical, as stored
    assert container["resources"]["requests"]["memory"] == "64Gi"
    assert pod(job)["nodeSelector"] == {"gpu": "h100"}
    assert "/dev/shm" in {m["mountPath"] for m in container["volumeMounts"]}


def test_a_cpu_job_with_servers_only_prepares_without_gpus() -> None:
    job = build_children(make_job(CPU), DEFAULTS).prepare
    assert job is not None and "resources" not in pod(job)["containers"][0]


def test_a_suspended_job_builds_a_suspended_prepare_job() -> None:
    job = build_children(make_job({"suspend": True}), DEFAULTS).prepare
    assert job is not None and job["spec"]["suspend"] is True
