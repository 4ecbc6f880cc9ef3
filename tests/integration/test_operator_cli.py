"""`rlkd operator` as the Deployment runs it: a process that logs JSON lines and serves kopf's
liveness endpoint and Prometheus metrics (here against kmock's emulator, on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.kube_emulator import kube_emulator
from tests.s3server import HOST, free_ports


async def get(url: str) -> str | None:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.text() if response.status == 200 else None
    except aiohttp.ClientError:
        return None


async def test_the_operator_process_serves_liveness_and_metrics(tmp_path: Path) -> None:
    liveness, metrics = free_ports(2)
    async with kube_emulator(tmp_path) as (_, kubeconfig):
        args = [
            str(Path(sys.executable).with_name("rlkd")),
            "operator",
            "--namespace=ns1",
            "--standalone",
            f"--liveness=http://{HOST}:{liveness}/healthz",
            f"--metrics-port={metrics}",
            f"--metrics-address={HOST}",
        ]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        log = tmp_path / "operator.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            alive = None
            for _ in range(600):  # a generous deadline: the process imports kopf and the client
                if (alive := await get(f"http://{HOST}:{liveness}/healthz")) is not None:
                    break
                await asyncio.sleep(0.1)
            page = await get(f"http://{HOST}:{metrics}/metrics")
        finally:
            proc.terminate()
            assert proc.wait(30) == 0
    assert alive is not None and page is not None and 'rlkd_jobs{phase="Training"} 0.0' in page
    assert "rlkd_operator_reconciles_total 0.0" in page
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("Signal SIGTERM" in line["message"] for line in lines)
