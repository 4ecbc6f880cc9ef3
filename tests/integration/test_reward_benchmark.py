"""benchmarks/reward_pipeline.py on a tiny batch with no latency: its judge tells steps apart,
the reference pattern and ours (whole and streaming) give the same rewards, and streaming
stops the GSRM for students whose rewards are decided early."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "reward_pipeline.py"
RATIO = r"wall-time ratio reference/ours: \d+\.\d"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reward_pipeline", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("teacher", "student", "verdict"),
    [("#m3.4", "#m3.4", "yes"), ("#m3.4", "#m3.4s2", "no"), ("#q1.2", "#q1.3", "no")],
)
def test_the_stub_judge_compares_whole_part_ids(
    bench: ModuleType, teacher: str, student: str, verdict: str
) -> None:
    server = bench.Server(bench.World(prompts=1, generations=1, judge_reply_tokens=3))
    reply = server.respond(f"First: {teacher} the step\nSecond: {student} the step")
    assert reply.text.lower().startswith(verdict)


def test_every_pattern_gives_the_same_varied_rewards(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    args = "--prompts 3 --generations 3 --request-ms 0 --token-ms 0.5 --steps 1"
    rows = bench.main([*args.split(), "--judge-reply-tokens", "3", "--reference-threads", "4"])
    assert [row.rewards for row in rows[1:]] == [rows[0].rewards] * (len(rows) - 1)
    # Students diverge from their teachers: some score below their full alignment.
    world = bench.World(prompts=3, generations=3, judge_reply_tokens=3)
    full = [min(len(world.steps(e, None)), len(world.steps(e, g))) for e, g in world.completions()]
    assert any(r < f for r, f in zip(rows[0].rewards, full, strict=True))
    # Those are stopped early: fewer GSRM tokens at steady state, the same decompositions asked.
    whole, streaming = (
        next(r for r in rows if r.name == f"ours, {n}, steady state")
        for n in ("whole", "streaming")
    )
    assert streaming.aborted > 0
    assert streaming.gsrm_tokens < whole.gsrm_tokens
    assert streaming.gsrm_generations == whole.gsrm_generations == 9
    # The contract lines: one per pool, then, last, the default pool's.
    lines = [line for line in capsys.readouterr().out.splitlines() if "wall-time ratio" in line]
    per_pool = [re.fullmatch(rf"{RATIO} \((\d+) threads\)", line) for line in lines[:-1]]
    assert [int(m[1]) for m in per_pool if m] == sorted({4, min(32, (os.cpu_count() or 1) + 4)})
    assert re.fullmatch(RATIO, lines[-1])
