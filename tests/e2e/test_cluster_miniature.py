"""The whole system in miniature: a tiny RLKDJob goes from `kubectl apply` to a distilled model in
S3, with every child really running.

Real parts: the Kubernetes emulator (kmock) with `rlkd operator` as a process against it, the S3
server, the pod runner (tests/podrunner: the kubelet and the controllers the emulator lacks) that
starts the operator's children as local processes: the GSRM's and the judge's vLLM servers (CPU
vLLM, models streamed from S3 by the Run:ai streamer), `rlkd prepare` and `rlkd train` with the
env, volumes and Secret the manifests give them. Nothing in between is mocked: the seams are the
manifests the operator builds, the env contract, the store and the progress document.

The run: Provisioning -> Preparing -> (Evaluating) -> Training -> (Evaluating) -> Succeeded; the
learner is SIGKILLed after its first complete checkpoint (the runner restarts it, it resumes from
the store), and the operator is SIGKILLed and started again mid-run (no child is made twice).
`make e2e-cluster` runs this alone and keeps its logs (RLKD_E2E_LOGS).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlkd.k8s.defaults import OPERATOR_NAMESPACE_ENV, STORAGE_ENV
from rlkd.spec.progress import COMPLETE_MARKER, PROGRESS_KEY
from rlkd.store import LocalStore, S3Config
from rlkd.store.base import Store
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR
from rlkd.store.s3 import S3Store
from rlkd.toy import toy_model
from rlkd_operator.resources import DEPLOYMENTS
from tests.kube_emulator import Emulator, kube_emulator
from tests.minimodels import cache_dir, mini_gsrm, mini_judge
from tests.podrunner import PodRunner
from tests.s3server import HOST, S3Server, free_ports
from tests.vllmserver import require_vllm

pytestmark = [pytest.mark.s3, pytest.mark.vllm]

NS, OPERATOR_NS, SOURCE_SECRET = "lab", "rlkd-system", "rlkd-s3"
NAME = "mini"
LOGS_ENV = "RLKD_E2E_LOGS"
"""Where `make e2e-cluster` keeps the run's logs (pods, operator, phases) for a person to read."""
RLKDJOBS = "/apis/rlkd.ai/v1alpha1/namespaces/{ns}/rlkdjobs"
STEPS = 6
REQUESTS = "vllm:request_success_total"
"""vLLM's count of requests it finished (by reason)."""


def job(bucket: str) -> dict[str, Any]:
    """A tiny job on the operator's default store: the toy domain, the mini GSRM and judge served
    by vLLM (one CPU server each), rollouts by the learner itself, evaluation before and after."""

    def served(positions: int, max_tokens: int) -> dict[str, Any]:
        vllm = {"extraArgs": ["--enforce-eager", "--max-num-seqs", "16"], "maxModelLen": positions}
        request = {"maxTokens": max_tokens, "timeoutSeconds": 120}
        return {"backend": "vllm", "vllm": vllm, "request": request}

    return {
        "apiVersion": "rlkd.ai/v1alpha1",
        "kind": "RLKDJob",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "student": {"model": "toy://tiny-student"},
            "dataset": {"uri": "toy://arithmetic", "limit": 8},
            # The mini models' context: 2048 positions for the GSRM, 512 for the judge.
            "gsrm": {"model": "store://models/mini-gsrm", **served(2048, 512)},
            "judge": {"model": "store://models/mini-judge", **served(512, 4)},
            "grpo": {
                "learningRate": 1e-4,
                "numGenerations": 4,
                "perDeviceTrainBatchSize": 4,
                "gradientAccumulationSteps": 1,
                "maxPromptLength": 128,
                "maxCompletionLength": 176,
                "temperature": 1.0,
                "beta": 0.0,
                "maxSteps": STEPS,
                "saveSteps": 2,
                "precision": "fp32",
                "gradientCheckpointing": False,
                "systemPrompt": (
                    "Reason step by step in <think> </think>, then answer in <answer> </answer> "
                    "as \\boxed{}."
                ),
            },
            "rollout": {"mode": "transformers"},
            "evaluation": {"uri": "toy://arithmetic-test", "limit": 4},
            "learner": {
                "gpusPerReplica": 0,
                "deepspeed": {"stage": 0},
                "reportTo": [],
                "backoffLimit": 3,
            },
            # CPU vLLM: a KV cache of 1 GiB, not a share of a GPU's memory.
            "pods": {"env": [{"name": "VLLM_CPU_KVCACHE_SPACE", "value": "1"}]},
        },
    }


class Watch:
    """The RLKDJob's status as it changes: phases with their times, steps, rewards."""

    def __init__(self) -> None:
        self.phases: list[tuple[float, str]] = []
        self.steps: list[int] = []
        self.structure: list[float] = []
        self.started = time.monotonic()
        self.status: dict[str, Any] = {}

    def see(self, status: dict[str, Any]) -> None:
        self.status = status
        phase = status.get("phase")
        if phase and (not self.phases or self.phases[-1][1] != phase):
            self.phases.append((round(time.monotonic() - self.started, 1), phase))
        progress = status.get("progress") or {}
        if not self.steps or self.steps[-1] != progress.get("step", 0):
            self.steps.append(progress.get("step", 0))
        if "structure" in (progress.get("rewards") or {}):
            self.structure.append(progress["rewards"]["structure"])

    def phase(self) -> str | None:
        return self.phases[-1][1] if self.phases else None


async def watching(emulator: Emulator, watch: Watch) -> None:
    path = RLKDJOBS.format(ns=NS) + f"/{NAME}"
    client = emulator.servers[0].client
    while True:
        async with client.get(path) as response:
            if response.status == 200:
                watch.see((await response.json()).get("status") or {})
        await asyncio.sleep(0.2)


class Operator:
    """`rlkd operator` as its Deployment runs it, a process of its own against the emulator."""

    def __init__(self, kubeconfig: Path, env: dict[str, str], logs: Path) -> None:
        self.kubeconfig, self.env, self.logs = kubeconfig, env, logs
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        [liveness, metrics] = free_ports(2)
        args = [
            str(Path(sys.executable).with_name("rlkd")),
            "operator",
            f"--namespace={NS}",
            "--standalone",
            "--poll-seconds=1",
            f"--liveness=http://{HOST}:{liveness}/healthz",
            f"--metrics-port={metrics}",
            f"--metrics-address={HOST}",
        ]
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        with open(self.logs / f"operator-{self.starts}.log", "wb") as out:
            self.process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def upload(store: Store, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put_file(prefix + path.relative_to(folder).as_posix(), path)


def toy_student_store() -> LocalStore:
    """A store holding the toy student as toy:// refs find it: built once per machine."""
    store = LocalStore(cache_dir() / "toy-store")
    toy_model("tiny-student", store, cache_dir() / "toy-local")
    return store


def copy_store(source: Store, target: Store, prefix: str) -> None:
    for key in source.list(prefix):
        data = source.get_bytes(key)
        target.put_bytes(key, data)


def operator_creates(emulator: Emulator) -> list[str]:
    """'resource/name' of every create the operator sent (the runner's and kmock's are not)."""
    return [
        f"{r.resource.plural}/{r.data['metadata']['name']}"
        for r in emulator._requests
        if r.method == "POST"
        and r.resource is not None
        and r.resource.plural != "events"
        and "rlkd-podrunner" not in r.headers.get("User-Agent", "")
        and "kmock" not in r.headers.get("User-Agent", "")
    ]


def metric(url: str, name: str) -> float:
    """The sum of one Prometheus counter over its label sets, from vLLM's own /metrics."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if re.match(rf"{name}(\{{|\s)", line)
    )


@contextlib.asynccontextmanager
async def background(coroutine: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(coroutine)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Any, runner: PodRunner, watch: Watch, timeout: float, what: str) -> Any:
    """Wait for `check`; fail at once when the job fails (a broken contract ends here, with the
    job's own message), else after `timeout`."""

    def done() -> Any:
        if watch.phase() == "Failed" and what != "the end":
            raise AssertionError(f"the job failed waiting for {what}: {watch.status}")
        return check()

    try:
        return await runner.wait_for(done, timeout)
    except TimeoutError as exc:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}") from exc


async def test_a_tiny_rlkdjob_runs_from_apply_to_a_distilled_model(
    tmp_path: Path, s3_server: S3Server
) -> None:
    require_vllm()
    logs = Path(os.environ.get(LOGS_ENV) or tmp_path / "logs")
    logs.mkdir(parents=True, exist_ok=True)
    bucket = f"mini-{uuid.uuid4().hex[:10]}"
    shared = S3Store(
        S3Config(
            endpoint=s3_server.endpoint,
            bucket=bucket,
            prefix="rlkd",
            credentials=s3_server.credentials,
        )
    )
    # The mini GSRM and judge, built once per machine, go where the job's store:// refs point;
    # the toy student (minutes of SFT on a busy CPU) where toy://tiny-student finds it built.
    upload(shared, mini_gsrm(), "models/mini-gsrm/")
    upload(shared, mini_judge(), "models/mini-judge/")
    copy_store(toy_student_store(), shared, "toy/models/")
    watch = Watch()

    async with kube_emulator(tmp_path) as (emulator, kubeconfig):
        client = emulator.servers[0].client
        keys = {
            ACCESS_KEY_VAR: s3_server.credentials.access_key,
            SECRET_KEY_VAR: s3_server.credentials.secret_key,
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SOURCE_SECRET, "namespace": OPERATOR_NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()},
        }
        async with client.post(f"/api/v1/namespaces/{OPERATOR_NS}/secrets", json=secret) as r:
            assert r.status < 300, await r.text()
        api_url = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        operator = Operator(
            kubeconfig,
            {
                STORAGE_ENV["endpoint"]: s3_server.endpoint,
                STORAGE_ENV["bucket"]: bucket,
                STORAGE_ENV["credentials_secret"]: SOURCE_SECRET,
                OPERATOR_NAMESPACE_ENV: OPERATOR_NS,
            },
            logs,
        )
        home = Path(os.environ.get("RLKD_E2E_HOME") or tmp_path / "home")
        async with (
            PodRunner(api_url, (NS,), logs / "pods", home=home) as runner,
            background(watching(emulator, watch)),
        ):
            operator.start()
            try:
                async with client.post(RLKDJOBS.format(ns=NS), json=job(bucket)) as r:
                    assert r.status < 300, await r.text()
                run = S3Store(
                    S3Config(
                        endpoint=s3_server.endpoint,
                        bucket=bucket,
                        prefix=f"rlkd/{NS}/{NAME}",
                        credentials=s3_server.credentials,
                    )
                )

                # Training, with a complete checkpoint in the store: kill the learner.
                def checkpointed() -> bool:
                    return watch.phase() == "Training" and any(
                        k.endswith("/" + COMPLETE_MARKER) for k in run.list("checkpoints/")
                    )

                await until(checkpointed, runner, watch, 900, "the first complete checkpoint")
                # By now prepare has decomposed the teacher's paths with the GSRM, and training
                # has scored completions: both servers' own metrics count the requests.
                served = {
                    role: metric(runner.service_url(NS, f"{NAME}-{role}"), REQUESTS)
                    for role in ("gsrm", "judge")
                }
                killed = runner.kill("PyTorchJob", NAME, signal.SIGKILL)
                assert killed, "no learner process to kill"
                await until(
                    lambda: runner.restarts("PyTorchJob", NAME) >= 1, runner, watch, 60, "a restart"
                )

                # The operator dies mid-run and comes back: it adopts what exists.
                operator.kill()
                before = operator_creates(emulator)
                operator.start()
                await until(
                    lambda: watch.phase() in ("Succeeded", "Failed"), runner, watch, 900, "the end"
                )
                assert watch.phase() == "Succeeded", watch.status
                after = operator_creates(emulator)
                replicas = {
                    role: emulator.stored(DEPLOYMENTS, NS, f"{NAME}-{role}")["spec"]["replicas"]
                    for role in ("gsrm", "judge")
                }
                # Inference scales to zero once the run is done: the processes go.
                for role in ("gsrm", "judge"):
                    gone = f"the {role} server to stop"
                    await until(
                        lambda r=role: not runner.pids("Deployment", f"{NAME}-{r}"),
                        runner,
                        watch,
                        120,
                        gone,
                    )
            finally:
                operator.kill()
                (logs / "phases.json").write_text(
                    json.dumps({"phases": watch.phases, "steps": watch.steps}, indent=1)
                )
        assert runner.alive() == []  # nothing left running

    phases = [phase for _, phase in watch.phases]
    # (Pending is the phase of a job without status: the first reconcile already has its store
    # check, so the first phase written is Provisioning.) Evaluating lasts as long as an
    # evaluation of 4 problems, often under a second here: the operator, which reads the progress
    # document every --poll-seconds, may or may not see it (CI and this machine have each missed
    # the last one), so the
    # evaluations' results are the evidence that both ran.
    expected = ["Provisioning", "Preparing", "Training", "Succeeded"]
    assert _subsequence(expected, phases), phases
    assert "accuracy=" in watch.status["message"], watch.status["message"]
    assert max(watch.steps) == STEPS and len(set(watch.steps)) > 2, watch.steps
    assert watch.status["artifacts"]["model"].endswith(f"{NS}/{NAME}/model")
    # No child was created twice: not by the restarted operator, not by the first.
    assert len(after) == len(set(after)), after
    assert set(before) <= set(after)
    # The progress document says the learner resumed, with the planned steps and no lost errors.
    progress = run.get_json(PROGRESS_KEY)
    assert progress["stage"] == "finished" and progress["step"] == STEPS
    assert set(progress["evaluations"]) == {"before", "after"}
    # Whatever reward errors occurred are counted in the progress document and in the status.
    assert watch.status["progress"].get("rewardErrors", {}) == progress.get("rewardErrors", {})
    assert replicas == {"gsrm": 0, "judge": 0}, replicas
    assert "resuming from checkpoint-" in runner.log(f"{NAME}-master-0").read_text()
    # The reward engine really talked to both servers, and the structure reward scored.
    assert served["gsrm"] > 0 and served["judge"] > 0, served
    assert any(value > 0 for value in watch.structure), watch.structure
    # The model is in S3 and loads with transformers.
    from transformers import AutoModelForCausalLM

    local = tmp_path / "model"
    for key in run.list("model/"):
        run.get_file(key, local / key.removeprefix("model/"))
    AutoModelForCausalLM.from_pretrained(local)


def _subsequence(wanted: list[str], seen: list[str]) -> bool:
    it = iter(seen)
    return all(any(phase == w for phase in it) for w in wanted)
