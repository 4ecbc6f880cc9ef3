"""How the operator scales: J RLKDJobs applied at once against kmock's Kubernetes emulator.

Runs the real `rlkd operator` as a subprocess (so its RSS is its own) against an emulator in this
process and a real S3 server (`weed mini`, loopback only), then measures:
  - the time from applying every job until each has its ConfigMap, Services and Deployments;
  - the API requests the operator sent per job until it went quiet (discovery, lists and watches
    included);
  - the operator's peak RSS (VmHWM);
  - the writes it sends per minute once everything is idle.

    .venv/bin/python benchmarks/operator_scale.py [--jobs 100] [--idle-seconds 60]

The last line is exactly: operator scale: J jobs, S s to children, R requests/job, M MB RSS,
W idle writes/min
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

from rlkd.k8s.defaults import STORAGE_ENV
from rlkd.store import S3Config
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR
from rlkd.store.s3 import S3Store
from rlkd_operator.resources import (
    CONFIGMAPS,
    DEPLOYMENTS,
    RLKDJOBS,
    SECRETS,
    SERVICES,
)
from tests.kube_emulator import Emulator, kube_emulator, wait_for
from tests.operator_fixtures import job_body
from tests.s3server import HOST, free_ports, weed_s3_server

NAMESPACE = "bench"
BUCKET = "rlkd-bench"
SECRET = "rlkd-store"
"""The default store's credentialsSecret in the benchmark's namespace: what the pods and the
operator's store check read."""
WRITES = {"POST", "PATCH", "PUT", "DELETE"}


def operator_requests(emulator: Emulator) -> list[object]:
    """Requests the operator sent (the benchmark's own carry kmock's User-Agent)."""
    return [r for r in emulator._requests if "kmock" not in r.headers.get("User-Agent", "")]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


async def quiet(emulator: Emulator, seconds: float) -> None:
    """Wait until the operator has sent nothing for `seconds`."""
    while True:
        count = len(operator_requests(emulator))
        await asyncio.sleep(seconds)
        if len(operator_requests(emulator)) == count:
            return


async def bench(jobs: int, idle_seconds: float, workdir: Path) -> str:
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
            }
            args = [
                str(Path(sys.executable).with_name("rlkd")),
                "operator",
                f"--namespace={NAMESPACE}",
                "--standalone",
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
                bodies = []
                for i in range(jobs):
                    body = job_body(f"job-{i:03d}", NAMESPACE)
                    body["metadata"] = {"name": body["metadata"]["name"], "namespace": NAMESPACE}
                    del body["spec"]["storage"]  # the operator's default store
                    bodies.append(body)
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
                proc.wait(30)
    per_minute = writes * 60 / idle_seconds
    return (
        f"operator scale: {jobs} jobs, {to_children:.1f} s to children, "
        f"{requests / jobs:.1f} requests/job, {rss:.0f} MB RSS, {per_minute:g} idle writes/min"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlkd-bench-") as workdir:
        print(asyncio.run(bench(args.jobs, args.idle_seconds, Path(workdir))))


if __name__ == "__main__":
    main()
