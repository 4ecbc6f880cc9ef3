"""benchmarks/operator_scale.py on a few jobs: the real `rlkd operator` subprocess takes GPU jobs
through their lifecycle against the canonicalising emulator and then sends no writes at all."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.operator_scale import bench

pytestmark = pytest.mark.s3  # it starts its own `weed mini` on 127.0.0.1
LINE = (
    r"operator scale: 4 jobs \(2 GPU learners\), [\d.]+ s to children, [\d.]+ s to steady, "
    r"[\d.]+ requests/job, \d+ MB RSS, (?P<writes>[\d.]+) idle writes/min"
)


async def test_gpu_jobs_at_steady_state_make_no_idle_writes(tmp_path: Path) -> None:
    line = await bench(jobs=4, idle_seconds=6.0, poll_seconds=0.5, workdir=tmp_path)
    match = re.fullmatch(LINE, line)
    assert match, line
    assert float(match["writes"]) == 0  # 12 polls and a resync, every job steady
