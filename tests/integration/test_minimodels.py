"""The mini GSRM and judge (tests/minimodels.py) through the transformers backend, greedily, on
held-out toy problems: the GSRM's decompositions parse, and the judge's replies are read and
mostly right. The first run on a machine builds both (a few minutes of CPU); later runs read
them from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlkd.gsrm.backends import build_decomposer, build_judge
from rlkd.spec.job import InferenceSpec, RequestSettings
from tests.minimodels import MeasuredGSRM, gsrm_quality, judge_accuracy, mini_gsrm, mini_judge

pytest.importorskip("trl")

PATHS = 40
QUESTIONS = 400


def spec(model: Path, max_tokens: int) -> InferenceSpec:
    request = RequestSettings(max_tokens=max_tokens, max_concurrency=40)
    return InferenceSpec(backend="transformers", model=str(model), request=request)


async def test_the_mini_gsrm_writes_steps_that_parse() -> None:
    decomposer = build_decomposer(spec(mini_gsrm(), 256), env={})

    measured: MeasuredGSRM = await gsrm_quality(decomposer, PATHS)

    print(measured)
    assert set(measured.failures) <= {"token_limit"}  # a few loop until the budget
    assert measured.parse_rate >= 0.8


async def test_the_mini_judge_answers_yes_or_no_mostly_right() -> None:
    judge = build_judge(spec(mini_judge(), 2), env={})

    parsed, right = await judge_accuracy(judge, QUESTIONS)

    print(f"judge: {parsed:.3f} parsed, {right:.3f} right")
    assert parsed == 1.0
    assert right >= 0.55
