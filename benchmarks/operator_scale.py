"""How the operator scales: J RLKDJobs applied at once against kmock's Kubernetes emulator.

Runs the real `rlkd operator` as a subprocess (so its RSS is its own) against an emulator in this
process and a real S3 server (`weed mini`, loopback only). The emulator stores quantities in
canonical form as kube-apiserver does (`nvidia.com/gpu: 1` as "1"), and every job has GPU
children: its gsrm and judge vLLM Deployments ask for `nvidia.com/gpu` (one each), and every
other job has a GPU learner and a gsrm with `cpu: 0.5` (stored as "500m"). The benchmark plays
the controllers: it marks the Deployments Available, runs every learner, and finishes half of
the jobs (final model in the store, PyTorchJob Succeeded: the operator scales their servers to
zero); the other half stay Training. It measures:
  - the time from applying every job until each has its ConfigMap, Services and Deployments;
  - the time until every job is steady (Training or Succeeded with its servers at zero);
  - the API requests the operator sent per job over that lifecycle (discovery, lists, watches
    and the periodic resync's lists included);
  - the operator's peak RSS (VmHWM);
  - the writes it sends per minute once every job is steady: must be 0.

    .venv/bin/python benchmarks/operator_scale.py [--jobs 100] [--idle-seconds 60]
        [--poll-seconds 5]

The operator polls every --poll-seconds (and resyncs every 10 polls), so the idle minute
covers many polls and a resync, as a real cluster's 30 s polls would over a longer stretch.

The last line is exactly: operator scale: J jobs (G GPU learners), S s to children, T s to
steady, R requests/job, M MB RSS, W idle writes/min
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlkd.k8s.defaults import OPERATOR_NAMESPACE_ENV, STORAGE_ENV
from rlkd.spec.progress import MODEL_PREFIX, PROGRESS_KEY, run_prefix
from rlkd.store import S3Config
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR
from rlkd.store.s3 import S3Store
from rlkd_operator.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    PYTORCHJOBS,
    RLKDJOBS,
    SECRETS,
    SERVICES,
)
from tests.kube_emulator import Emulator, kube_emulator, wait_for
from tests.operator_fixtures import available, job_body, pytorchjob_in
from tests.s3server import HOST, free_ports, weed_s3_server

NAMESPACE = "bench"
BUCKET = "rlkd-bench"
SECRET = "rlkd-store"
"""The default store's credentialsSecret in the benchmark's namespace: the source of each job's
copy, and what the operator's store check reads."""
WRITES = {"POST", "PATCH", "PUT", "DELETE"}
INFERENCE = ("gsrm", "judge")


def bench_job(i: int) -> dict:
    """Job i on the operator's default store; odd ones with a GPU learner and a gsrm whose
    `cpu: 0.5` the server stores as "500m"."""
    body = job_body(f"job-{i:03d}", NAMESPACE)
    body["metadata"] = {"name": body["metadata"]["name"], "namespace": NAMESPACE}
    del body["spec"]["storage"]  # the operator's default store
    if i % 2:
        body["spec"]["learner"] = {"gpusPerReplica": 1}
        body["spec"]["gsrm"]["vllm"]["resources"] = {"cpu": "0.5", "memory": "1024Mi"}
    return body


class Controllers:
    """What the cluster's controllers and the learner would do, played through the emulator."""

    def __init__(self, emulator: Emulator, store: S3Store) -> None:
        self.emulator, self.store = emulator, store
        self.client = emulator.servers[0].client

    async def call(self, method: str, path: str, body: dict) -> None:
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with self.client.request(method, path, json=body, headers=headers) as response:
            response.raise_for_status()

    def get(self, api: object, name: str) -> dict | None:
        return self.emulator.stored(api, NAMESPACE, name)

    async def set_status(self, api: object, name: str, body: dict) -> None:
        await self.call("PATCH", api.path(NAMESPACE, name) + "/status", {"status": body["status"]})

    async def servers_available(self, job: str) -> None:
        for role in INFERENCE:
            name = f"{job}-{role}"
            await self.set_status(DEPLOYMENTS, name, available(self.get(DEPLOYMENTS, name)))

    async def learner(self, job: str, state: str) -> None:
        await self.set_status(PYTORCHJOBS, job, pytorchjob_in(self.get(PYTORCHJOBS, job), state))

    def finish(self, job: str) -> None:
        """What the learner writes at the end: the final model and its progress document."""
        prefix = run_prefix("rlkd", NAMESPACE, job) + "/"
        self.store.put_bytes(prefix + MODEL_PREFIX + "config.json", b"{}")
        model = self.store.uri_for(prefix + MODEL_PREFIX.rstrip("/"))
        progress = {"stage": "finished", "step": 20, "totalSteps": 20, "model": model}
        self.store.put_json(prefix + PROGRESS_KEY, progress)

    def phase(self, job: str) -> str | None:
        return ((self.get(RLKDJOBS, job) or {}).get("status") or {}).get("phase")

    def scaled_down(self, job: str) -> bool:
        return all(self.get(DEPLOYMENTS, f"{job}-{r}")["spec"]["replicas"] == 0 for r in INFERENCE)


def operator_requests(emulator: Emulator) -> list[object]:
    """Requests the operator sent (the benchmark's own carry kmock's User-Agent)."""
    return [r for r in emulator._requests if "kmock" not in r.headers.get("User-Agent", "")]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


async def quiet(emulator: Emulator, seconds: float, limit: float = 60.0) -> None:
    """Wait until the operator has sent nothing for `seconds`, or `limit` seconds have passed
    (an operator in a write storm is never quiet: the idle count then shows it)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        count = len(operator_requests(emulator))
        await asyncio.sleep(seconds)
        if len(operator_requests(emulator)) == count:
            return


async def bench(jobs: int, idle_seconds: float, poll_seconds: float, workdir: Path) -> str:
    with weed_s3_server(workdir / "s3") as s3:
        store = S3Store(S3Config(endpoint=s3.endpoint, bucket=BUCKET, credentials=s3.credentials))
        store.put_bytes("rlkd/datasets/train.jsonl", b"{}\n")
        async with kube_emulator(workdir) as (emulator, kubeconfig):
            liveness, metrics = free_ports(2)
            keys = {
                ACCESS_KEY_VAR: s3.credentials.access_key,
                SECRET_KEY_VAR: s3.credentials.secret_key,
            }
            secret = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NAMESPACE},
                "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()},
            }
            async with emulator.servers[0].client.post(
                SECRETS.path(NAMESPACE), json=secret
            ) as response:
                response.raise_for_status()
            env = {
                **os.environ,
                "KUBECONFIG": str(kubeconfig),
                STORAGE_ENV["endpoint"]: s3.endpoint,
                STORAGE_ENV["bucket"]: BUCKET,
                STORAGE_ENV["credentials_secret"]: SECRET,
                # The operator runs in the jobs' namespace here: each job reads its own copy.
                OPERATOR_NAMESPACE_ENV: NAMESPACE,
            }
            args = [
                str(Path(sys.executable).with_name("rlkd")),
                "operator",
                f"--namespace={NAMESPACE}",
                "--standalone",
                f"--poll-seconds={poll_seconds}",
                f"--liveness=http://{HOST}:{liveness}/healthz",
                f"--metrics-port={metrics}",
                f"--metrics-address={HOST}",
            ]
            with open(workdir / "operator.log", "wb") as log:
                proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                await wait_for(
                    lambda: any(
                        r.action is not None and r.action.name == "WATCH"
                        for r in operator_requests(emulator)
                    ),
                    60,
                )
                await quiet(emulator, 1.0)
                bodies = [bench_job(i) for i in range(jobs)]
                names = [b["metadata"]["name"] for b in bodies]
                client = emulator.servers[0].client
                started = time.monotonic()

                async def apply(body: dict) -> None:
                    async with client.post(RLKDJOBS.path(NAMESPACE), json=body) as response:
                        response.raise_for_status()

                await asyncio.gather(*(apply(b) for b in bodies))

                def children_done() -> bool:
                    return all(
                        emulator.stored(api, NAMESPACE, f"{b['metadata']['name']}{suffix}")
                        for b in bodies
                        for api, suffix in (
                            (CONFIGMAPS, "-config"),
                            (SERVICES, "-judge"),
                            (DEPLOYMENTS, "-gsrm"),
                            (DEPLOYMENTS, "-judge"),
                        )
                    )

                await wait_for(children_done, 600)
                to_children = time.monotonic() - started
                cluster = Controllers(emulator, store)
                for name in names:
                    await cluster.servers_available(name)
                await wait_for(lambda: all(cluster.get(PYTORCHJOBS, n) for n in names), 600)
                for name in names:
                    await cluster.learner(name, "Running")
                await wait_for(lambda: all(cluster.phase(n) == "Training" for n in names), 600)
                finished = names[::2]
                for name in finished:
                    cluster.finish(name)
                    await cluster.learner(name, "Succeeded")
                await wait_for(
                    lambda: all(
                        cluster.phase(n) == "Succeeded" and cluster.scaled_down(n) for n in finished
                    ),
                    600,
                )
                for name in finished:  # the Deployment controller sees zero replicas
                    await cluster.servers_available(name)
                to_steady = time.monotonic() - started
                await quiet(emulator, 3.0)
                requests = len(operator_requests(emulator))  # start-up included
                idle_from = len(operator_requests(emulator))
                await asyncio.sleep(idle_seconds)
                idle = operator_requests(emulator)[idle_from:]
                writes = sum(1 for r in idle if r.method.name in WRITES)
                rss = peak_rss_mb(proc.pid)
                stat = Path(f"/proc/{proc.pid}/stat").read_text().split()
                cpu = (int(stat[13]) + int(stat[14])) / os.sysconf("SC_CLK_TCK")
                print(f"operator CPU {cpu:.1f} s, emulator CPU {time.process_time():.1f} s")
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:  # too busy (a write storm) to stop in time
                    proc.kill()
                    proc.wait()
    per_minute = writes * 60 / idle_seconds
    return (
        f"operator scale: {jobs} jobs ({jobs // 2} GPU learners), {to_children:.1f} s to "
        f"children, {to_steady:.1f} s to steady, {requests / jobs:.1f} requests/job, "
        f"{rss:.0f} MB RSS, {per_minute:g} idle writes/min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--poll-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlkd-bench-") as workdir:
        print(asyncio.run(bench(args.jobs, args.idle_seconds, args.poll_seconds, Path(workdir))))


if __name__ == "__main__":
    main()
