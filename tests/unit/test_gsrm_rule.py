"""The rule backend: step-format text parsed as it is; normalised text and exact numbers."""

from __future__ import annotations

import pytest

from rlkd.gsrm import Step
from rlkd.gsrm.backends.rule import RuleDecomposer, RuleJudge, number, same
from rlkd.gsrm.types import Decomposer, DecomposeRequest, Judge, Question


@pytest.mark.parametrize(
    ("teacher", "student", "numeric", "expected"),
    [
        ("Find x.", "find   X", False, True),
        ("ｆｉｎｄ x", "find x", False, True),  # width forms
        ("find x", "find y", False, False),
        ("0.5", "1/2", True, True),
        ("0.5", "1/2", False, False),  # sub-problems and meta compare as text
        ("1,000", "1000", True, True),
        ("$5", "5.0", True, True),
        ("-3", "−3", True, False),  # a Unicode minus is text, not a number
        ("1, 2", "12", True, False),
        ("3/0", "3/0", True, True),  # no number, equal text
        ("x = 5", "5", True, False),
        ("", "", True, True),
    ],
)
def test_same(teacher: str, student: str, numeric: bool, expected: bool) -> None:
    assert same(teacher, student, numeric=numeric) is expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("-2.50", -2.5),
        ("3/4", 0.75),
        ("1e3", 1000),
        ("12 apples", None),
        ("1.5/2", None),
    ],
)
def test_number(text: str, value: float | None) -> None:
    assert number(text) == value


async def test_decomposer_parses_step_text() -> None:
    decomposer = RuleDecomposer()
    assert isinstance(decomposer, Decomposer)
    results = await decomposer.decompose(
        [
            DecomposeRequest("[Meta-reasoning 1]: m [Sub-problem 1]: q [Answer 1]: a"),
            DecomposeRequest("prose"),
        ]
    )
    assert results == [[Step("m", "q", "a")], []]


async def test_judge_compares_answers_as_numbers_only() -> None:
    judge = RuleJudge()
    assert isinstance(judge, Judge)
    questions = [
        Question("answer", "0.5", "1/2"),
        Question("subproblem", "0.5", "1/2"),
        Question("meta", "Same.", "same"),
    ]
    assert await judge.judge(questions) == [True, False, True]
