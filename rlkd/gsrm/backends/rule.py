"""The `rule` backend: no model. The decomposer reads text already in step format; the judge
compares normalised text, and answers as numbers when both are numbers. Deterministic, so it
serves the toy domain, tests and runs without inference servers."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from fractions import Fraction

from rlkd.gsrm.steps import parse_steps
from rlkd.gsrm.types import DecomposeRequest, Decomposition, Question, Verdict


class RuleDecomposer:
    """Parses the reasoning as it is: its steps are the ones it writes in the GSRM format."""

    model_id = "rule"

    async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
        return [parse_steps(request.reasoning) for request in requests]


class RuleJudge:
    """Same or equal when the normalised texts are equal; answers that both read as numbers
    (integers, decimals, fractions such as 3/4) are compared exactly as numbers."""

    async def judge(self, questions: Sequence[Question]) -> list[Verdict]:
        return [same(q.teacher, q.student, numeric=q.kind == "answer") for q in questions]


def normalise(text: str) -> str:
    """Case, Unicode width forms, spacing and surrounding punctuation do not matter."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.split()).strip(" .,;:!?\"'`*")


def number(text: str) -> Fraction | None:
    """The number a normalised text states, if it is only a number: an integer, decimal or
    fraction, with an optional leading $ and commas between groups of thousands."""
    candidate = text.removeprefix("$")
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", candidate):
        candidate = candidate.replace(",", "")
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)(e[-+]?\d+)?(/\d+)?", candidate):
        return None
    try:
        return Fraction(candidate)
    except (ValueError, ZeroDivisionError):  # 1.5/2, 3/0
        return None


def same(teacher: str, student: str, *, numeric: bool) -> bool:
    """Whether two parts agree: as numbers when `numeric` and both are numbers, else as text."""
    a, b = normalise(teacher), normalise(student)
    if numeric and (x := number(a)) is not None and (y := number(b)) is not None:
        return x == y
    return a == b
