"""benchmarks/reward_pipeline.py on a tiny batch with no latency: its judge tells steps apart
and the reference pattern and ours give the same rewards."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "reward_pipeline.py"


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


def test_both_patterns_give_the_same_varied_rewards(bench: ModuleType) -> None:
    args = "--prompts 3 --generations 3 --request-ms 0 --token-ms 0 --steps 1"
    rows = bench.main([*args.split(), "--judge-reply-tokens", "3"])
    assert [row.rewards for row in rows[1:]] == [rows[0].rewards] * 2
    # Students diverge from their teachers: some score below their full alignment.
    world = bench.World(prompts=3, generations=3, judge_reply_tokens=3)
    full = [min(len(world.steps(e, None)), len(world.steps(e, g))) for e, g in world.completions()]
    assert any(r < f for r, f in zip(rows[0].rewards, full, strict=True))
