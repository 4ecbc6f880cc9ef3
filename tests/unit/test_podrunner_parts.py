"""The pod runner's pure parts (tests/podrunner): what it rewrites, how it resolves a container's
env, how the image table maps commands, and the status the controllers it plays write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rlkd.spec.runtime import STORE_SECRET_DIR, STORE_SECRET_DIR_ENV
from tests.podrunner.container import (
    container_env,
    fixed_path_overrides,
    on_loopback,
    pytorchjob_env,
    server_flags,
    under_mounts,
)
from tests.podrunner.errors import NotYet, UnknownImage
from tests.podrunner.images import VLLM_SERVER_MODULE, local_image, vllm_serve
from tests.podrunner.status import ReplicaRun, deployment_status, pytorchjob_status


@pytest.mark.parametrize(
    ("words", "local"),
    [
        (
            ["vllm", "serve", "s3://b/m", "--port", "8000"],
            ["python", "-m", VLLM_SERVER_MODULE, "--model", "s3://b/m", "--port", "8000"],
        ),
        (["vllm", "serve", "--help"], ["vllm", "serve", "--help"]),
        (["python", "-c", "pass"], ["python", "-c", "pass"]),
    ],
)
def test_the_vllm_images_entrypoint_runs_the_server_as_a_module(
    words: list[str], local: list[str]
) -> None:
    assert vllm_serve(words) == local


def test_an_image_outside_the_table_names_the_ones_in_it() -> None:
    with pytest.raises(UnknownImage, match="known: a:1"):
        local_image({"a:1": None}, "b:2")  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("argv", "flags"),
    [
        (["s", "--host", "0.0.0.0", "--port", "8000", "--dtype", "auto"], ["--host", "127.0.0.1"]),
        (["s", "--host=0.0.0.0", "--port=8000"], ["--host=127.0.0.1", "--port=4242"]),
    ],
)
def test_a_server_listens_on_its_own_loopback_port(argv: list[str], flags: list[str]) -> None:
    out = server_flags(argv, 4242)
    assert out[0] == "s" and all(flag in out for flag in flags) and "8000" not in " ".join(out)
    assert len(out) == len(argv)


def test_only_the_service_urls_host_and_port_move_to_loopback() -> None:
    env = {
        "RLKD_GSRM_URL": "http://demo-gsrm.ns1.svc:8000/v1",
        "RLKD_ROLLOUT_URL": "http://demo-rollout.ns1.svc.cluster.local:8000",
        "RLKD_JUDGE_URL": "https://api.example.com/v1",  # not a Service: as it is
        "OTHER_URL": "http://demo-gsrm.ns1.svc:8000/v1",  # not an endpoint variable
    }
    ports = {("ns1", "demo-gsrm"): 4001, ("ns1", "demo-rollout"): 4002}
    assert on_loopback(env, lambda ns, svc: ports[ns, svc]) == {
        "RLKD_GSRM_URL": "http://127.0.0.1:4001/v1",
        "RLKD_ROLLOUT_URL": "http://127.0.0.1:4002",
        "RLKD_JUDGE_URL": "https://api.example.com/v1",
        "OTHER_URL": "http://demo-gsrm.ns1.svc:8000/v1",
    }


def test_paths_inside_a_mount_move_with_it_and_the_store_secret_gets_its_variable() -> None:
    mounts = {"/etc/rlkd": Path("/tmp/p/config"), STORE_SECRET_DIR: Path("/tmp/p/store")}
    assert under_mounts("/etc/rlkd/job.yaml", mounts) == "/tmp/p/config/job.yaml"
    assert under_mounts("/etc/rlkdx/job.yaml", mounts) == "/etc/rlkdx/job.yaml"
    assert fixed_path_overrides(mounts) == {STORE_SECRET_DIR_ENV: "/tmp/p/store"}


def test_env_resolves_references_and_waits_for_what_is_missing() -> None:
    container = {
        "envFrom": [{"secretRef": {"name": "tracker"}}],
        "env": [
            {"name": "PLAIN", "value": "1"},
            {"name": "EMPTY"},
            {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "store", "key": "K"}}},
            {"name": "WANDB_API_KEY", "value": "env wins over envFrom"},
        ],
    }
    refs = {("Secret", "store"): {"K": "v"}, ("Secret", "tracker"): {"WANDB_API_KEY": "w"}}
    assert container_env(container, refs) == {
        "WANDB_API_KEY": "env wins over envFrom",
        "PLAIN": "1",
        "EMPTY": "",
        "KEY": "v",
    }
    with pytest.raises(NotYet, match="Secret store"):
        container_env(container, {("Secret", "tracker"): {}})


def pytorchjob(master: int, workers: int, nproc: str = "1") -> dict[str, Any]:
    specs = {"Master": {"replicas": master}, "Worker": {"replicas": workers}}
    return {
        "metadata": {"name": "demo", "namespace": "ns1"},
        "spec": {"nprocPerNode": nproc, "pytorchReplicaSpecs": specs, "runPolicy": {}},
    }


def test_workers_rank_after_the_master_and_the_world_counts_every_process() -> None:
    env = pytorchjob_env(pytorchjob(1, 2, nproc="2"), "Worker", 1, 29500)
    assert {k: env[k] for k in ("RANK", "PET_NODE_RANK", "WORLD_SIZE", "PET_NNODES")} == {
        "RANK": "2",
        "PET_NODE_RANK": "2",
        "WORLD_SIZE": "6",
        "PET_NNODES": "3",
    }


def test_a_deployment_at_zero_is_available_with_no_counts() -> None:
    deployment = {"metadata": {"generation": 3}, "spec": {"replicas": 0}}
    status = deployment_status(deployment, 0, 0, "t")
    assert set(status) == {"observedGeneration", "conditions"}
    assert status["conditions"][0]["status"] == "True"


def test_a_failed_pod_of_an_on_failure_replica_makes_the_job_restart_then_run_again() -> None:
    job = pytorchjob(1, 0)
    failed = pytorchjob_status(job, {"Master": ReplicaRun(failed=1)}, 0, "t1")
    assert [c["type"] for c in failed["conditions"]] == ["Created", "Restarting"]
    job["status"] = failed
    running = pytorchjob_status(job, {"Master": ReplicaRun(active=1)}, 0, "t2")
    assert [(c["type"], c["reason"]) for c in running["conditions"]] == [
        ("Created", "PyTorchJobCreated"),
        ("Running", "PyTorchJobRunning"),
    ]
    job["status"] = running
    assert pytorchjob_status(job, {"Master": ReplicaRun(active=1)}, 0, "t3") == running
