"""The local pod runner (tests/podrunner) on the Kubernetes emulator: it runs rlkd's children as
local processes and writes their status as the cluster's controllers do. Real parts: the
emulator's API, local processes, the S3 server, and (for the Deployment) a real vLLM server that
streams its model from S3 with the Run:ai streamer."""

from __future__ import annotations

import base64
import json
import re
import signal
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlkd.k8s import OperatorDefaults
from rlkd.k8s.config import build_config_map
from rlkd.k8s.inference import build_deployment, build_service
from rlkd.k8s.learner import build_pytorchjob
from rlkd.k8s.naming import JOB_LABEL
from rlkd.k8s.resolve import resolve_job
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import STORE_SECRET_DIR_ENV
from rlkd.spec.validate import parse_job
from rlkd.store import S3Config
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR
from rlkd.store.s3 import S3Store
from tests.kube_emulator import Emulator, kube_emulator
from tests.operator_fixtures import job_body
from tests.podrunner import PodRunner, UnknownImage
from tests.podrunner.kubeapi import KINDS
from tests.podrunner.process import group_members
from tests.s3server import S3Server
from tests.vllmserver import require_vllm

pytestmark = pytest.mark.s3
NS = "ns1"
DEFAULTS = OperatorDefaults()
PYTHON_IMAGE = DEFAULTS.trainer_image
"""The trainer image: its stand-in runs `python` from the venv running the tests."""


class Cluster:
    """The emulator as the operator's writes would leave it: create objects, read them back."""

    def __init__(self, emulator: Emulator, url: str) -> None:
        self.emulator, self.url = emulator, url

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        client = self.emulator.servers[0].client
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with client.request(method, path, json=body, headers=headers) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def create(self, body: dict[str, Any]) -> None:
        await self.call("POST", "/" + KINDS[body["kind"]].format(ns=NS), body)

    async def patch(self, kind: str, name: str, patch: dict[str, Any]) -> None:
        await self.call("PATCH", f"/{KINDS[kind].format(ns=NS)}/{name}", patch)

    def status(self, kind: str, name: str) -> dict[str, Any]:
        api = KINDS[kind].split("/namespaces/")[0].split("/")
        group, version = ("", api[1]) if api[0] == "api" else (api[1], api[2])
        plural = KINDS[kind].rsplit("/", 1)[1]
        stored = self.emulator.stored(_Api(group, version, plural), NS, name) or {}
        return dict(stored.get("status") or {})

    def condition(self, kind: str, name: str, kind_of: str) -> dict[str, Any] | None:
        conditions = self.status(kind, name).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind_of), None)


class _Api:
    def __init__(self, group: str, version: str, plural: str) -> None:
        self.group, self.version, self.plural = group, version, plural


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with kube_emulator(tmp_path) as (emulator, kubeconfig):
        url = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        yield Cluster(emulator, url)


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


def resolved(storage: dict[str, Any], **spec: Any) -> RLKDJob:
    body = job_body("demo", NS, **spec)
    body["spec"]["storage"] = storage
    return resolve_job(parse_job(body), DEFAULTS)


# Counts its runs in the file argv[1] names; fails until the run argv[2] (never, when 0).
FLAKY = """\
import pathlib, sys
runs = pathlib.Path(sys.argv[1])
run = len(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text("x" * run)
print("run", run, flush=True)
sys.exit(0 if run == int(sys.argv[2]) else 3)
"""


def batch_job(name: str, runs: Path, succeed_at: int, backoff_limit: int) -> dict[str, Any]:
    container = {
        "name": "main",
        "image": PYTHON_IMAGE,
        "command": ["python", "-c", FLAKY, str(runs), str(succeed_at)],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {JOB_LABEL: "demo"}},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        },
    }


async def test_a_job_replaces_failed_pods_until_it_succeeds_or_passes_its_backoff_limit(
    cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.create(batch_job("flaky", tmp_path / "flaky-runs", 3, backoff_limit=2))
    await cluster.create(batch_job("broken", tmp_path / "broken-runs", 0, backoff_limit=1))

    async with PodRunner(cluster.url, (NS,), tmp_path / "pods", poll_seconds=0.05) as runner:
        await runner.wait_for(lambda: cluster.condition("Job", "flaky", "Complete"))
        await runner.wait_for(lambda: cluster.condition("Job", "broken", "Failed"))
        assert runner.alive() == []

    flaky = cluster.status("Job", "flaky")
    assert (flaky["failed"], flaky["succeeded"], flaky.get("active")) == (2, 1, None)
    assert [c["type"] for c in flaky["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    assert {c["reason"] for c in flaky["conditions"]} == {"CompletionsReached"}
    assert flaky["startTime"] <= flaky["completionTime"]
    # A new pod each time (restartPolicy Never): three logs, one run each.
    runs = [re.findall(r"^run \d$", runner.log(f"flaky-{n}").read_text(), re.M) for n in range(3)]
    assert runs == [["run 1"], ["run 2"], ["run 3"]]

    broken = cluster.status("Job", "broken")
    assert (broken["failed"], broken.get("succeeded"), broken.get("active")) == (2, None, None)
    assert [c["type"] for c in broken["conditions"]] == ["FailureTarget", "Failed"]
    assert {c["reason"] for c in broken["conditions"]} == {"BackoffLimitExceeded"}
    assert (tmp_path / "broken-runs").read_text() == "xx"  # the first pod and one more


# The learner's stand-in: records what its container sees, then (first run) waits to be killed.
RECORD = """\
import json, os, pathlib, sys, time
out = pathlib.Path(sys.argv[1])
run = len(list(out.glob("run-*.json"))) + 1
secret = pathlib.Path(os.environ["RLKD_STORE_SECRET_DIR"])
seen = {
    "pid": os.getpid(),
    "env": dict(os.environ),
    "job_file": pathlib.Path(os.environ["RLKD_JOB_FILE"]).read_text(),
    "secret": {p.name: p.read_text() for p in secret.iterdir()},
}
(out / f"run-{run}.json").write_text(json.dumps(seen))
while run == 1:
    time.sleep(1)
"""


async def test_a_pytorchjob_replica_runs_with_the_training_operators_env_and_restarts_on_failure(
    cluster: Cluster, tmp_path: Path
) -> None:
    job = resolved(
        {"endpoint": "http://127.0.0.1:9", "bucket": "rlkd-test", "credentialsSecret": "store"}
    )
    keys = {ACCESS_KEY_VAR: "id", SECRET_KEY_VAR: "key"}
    pytorchjob = build_pytorchjob(job, DEFAULTS)
    [container] = pytorchjob["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"][
        "containers"
    ]
    out = tmp_path / "seen"
    out.mkdir()
    container["command"] = ["python", "-c", RECORD, str(out)]  # rlkd train's env, volumes
    for role in ("gsrm", "judge"):  # the servers it calls, at zero replicas: no vLLM here
        await cluster.create(build_service(job, role))
        await cluster.create(build_deployment(job, role, DEFAULTS, replicas=0))
    await cluster.create(build_config_map(job))
    await cluster.create(secret("store", keys))
    await cluster.create(pytorchjob)

    async with PodRunner(cluster.url, (NS,), tmp_path / "pods", poll_seconds=0.05) as runner:
        await runner.wait_for(lambda: (out / "run-1.json").exists())
        running = await runner.wait_for(lambda: cluster.condition("PyTorchJob", "demo", "Running"))
        assert cluster.status("PyTorchJob", "demo")["replicaStatuses"]["Master"]["active"] == 1
        [pid] = runner.kill("PyTorchJob", "demo", signal.SIGKILL)

        succeeded = await runner.wait_for(
            lambda: cluster.condition("PyTorchJob", "demo", "Succeeded")
        )
        assert runner.restarts("PyTorchJob", "demo") == 1
        assert runner.alive() == []
        gsrm_port = runner.ports[NS, "demo-gsrm"]

    status = cluster.status("PyTorchJob", "demo")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert list(conditions) == ["Created", "Running", "Succeeded"]
    # OnFailure: the container restarted inside its Running pod; no Restarting was written.
    assert conditions["Running"]["status"] == "False"
    assert conditions["Running"]["lastTransitionTime"] >= running["lastTransitionTime"]
    assert succeeded["reason"] == "PyTorchJobSucceeded" and status["completionTime"]
    assert status["replicaStatuses"]["Master"]["succeeded"] == 1
    assert "active" not in status["replicaStatuses"]["Master"]

    first, second = (json.loads((out / f"run-{n}.json").read_text()) for n in (1, 2))
    env = first["env"]
    master_port = int(env["MASTER_PORT"])
    assert {k: env[k] for k in env if k.startswith("PET_") or k in TRAINING_OPERATOR_ENV} == {
        "PYTHONUNBUFFERED": "0",
        "MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(master_port),
        "PET_MASTER_PORT": str(master_port),
        "WORLD_SIZE": "1",
        "RANK": "0",
        "PET_NNODES": "1",
        "PET_NODE_RANK": "0",
        "PET_NPROC_PER_NODE": "1",
    }
    assert env["RLKD_GSRM_URL"] == f"http://127.0.0.1:{gsrm_port}/v1"
    assert env["RLKD_STORE_PREFIX"] == f"rlkd/{NS}/demo"  # the manifest's values, as written
    assert first["job_file"] == build_config_map(job)["data"]["job.yaml"]
    assert Path(env["RLKD_DEEPSPEED_FILE"]).parent == Path(env["RLKD_JOB_FILE"]).parent
    assert first["secret"] == keys and env[STORE_SECRET_DIR_ENV].startswith(str(tmp_path))
    assert not {ACCESS_KEY_VAR, SECRET_KEY_VAR} & set(env)  # files, never variables
    assert first["pid"] == pid != second["pid"]  # killed, and started again
    assert second["env"]["MASTER_PORT"] == str(master_port)


TRAINING_OPERATOR_ENV = {
    "PYTHONUNBUFFERED",
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
}


async def test_an_image_without_a_local_stand_in_fails_the_runner_loudly(
    cluster: Cluster, tmp_path: Path
) -> None:
    job = batch_job("odd", tmp_path / "runs", 1, backoff_limit=0)
    job["spec"]["template"]["spec"]["containers"][0]["image"] = "registry.example/odd:1"
    await cluster.create(job)

    with pytest.raises(UnknownImage, match=re.escape("registry.example/odd:1")):
        async with PodRunner(cluster.url, (NS,), tmp_path / "pods", poll_seconds=0.05) as runner:
            await runner.wait_for(lambda: False, timeout=30)
    assert runner.alive() == []
    assert not (tmp_path / "runs").exists()


@pytest.mark.vllm
async def test_a_deployment_serves_its_model_from_s3_until_scaled_to_zero(
    cluster: Cluster, tmp_path: Path, s3_server: S3Server, tiny_model: Path
) -> None:
    require_vllm()
    bucket = f"pods-{uuid.uuid4().hex[:12]}"
    store = S3Store(
        S3Config(endpoint=s3_server.endpoint, bucket=bucket, credentials=s3_server.credentials)
    )
    for file in tiny_model.iterdir():
        store.put_file(f"rlkd/models/gsrm/{file.name}", file)
    storage = {"endpoint": s3_server.endpoint, "bucket": bucket, "credentialsSecret": "store"}
    gsrm = {"model": "store://models/gsrm", "vllm": {"extraArgs": ["--enforce-eager"]}}
    job = resolved(storage, gsrm=gsrm)
    keys = s3_server.credentials
    await cluster.create(
        secret("store", {ACCESS_KEY_VAR: keys.access_key, SECRET_KEY_VAR: keys.secret_key})
    )
    await cluster.create(build_service(job, "gsrm"))
    await cluster.create(build_deployment(job, "gsrm", DEFAULTS))

    async with PodRunner(cluster.url, (NS,), tmp_path / "pods", poll_seconds=0.2) as runner:
        starting = await runner.wait_for(lambda: cluster.status("Deployment", "demo-gsrm"))
        assert starting["conditions"][0]["status"] == "False"
        await runner.wait_for(
            lambda: cluster.status("Deployment", "demo-gsrm").get("availableReplicas"), 300
        )
        status = cluster.status("Deployment", "demo-gsrm")
        assert {k: v for k, v in status.items() if k != "conditions"} == {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
        }
        [available] = status["conditions"]
        assert (available["type"], available["status"], available["reason"]) == (
            "Available",
            "True",
            "MinimumReplicasAvailable",
        )

        url = runner.service_url(NS, "demo-gsrm")
        request = {"model": "gsrm", "prompt": "1 + 2 =", "max_tokens": 4}
        reply = post(f"{url}/v1/completions", request)
        assert reply["model"] == "gsrm" and len(reply["choices"]) == 1
        assert metric(url, "vllm:request_success_total") == 1
        log = runner.log("demo-gsrm-0").read_text()
        assert "--model s3://" in log and "Runai Model Streamer" in log

        [pid] = runner.pids("Deployment", "demo-gsrm")
        await cluster.patch("Deployment", "demo-gsrm", {"spec": {"replicas": 0}})
        await runner.wait_for(
            lambda: cluster.status("Deployment", "demo-gsrm").get("observedGeneration") == 2, 90
        )
        assert runner.pids("Deployment", "demo-gsrm") == []
        assert group_members(pid) == [] and runner.alive() == []  # the engine processes too
        scaled = cluster.status("Deployment", "demo-gsrm")
        assert {k for k in scaled if k != "conditions"} == {"observedGeneration"}
        assert scaled["conditions"][0]["status"] == "True"  # none wanted, none missing


def post(url: str, body: dict[str, Any]) -> Any:
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())


def metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        lines = reply.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0] == name)
