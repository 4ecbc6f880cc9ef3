"""What the structure-reward engine and its backends exchange. Errors are data: a backend
returns a `Failure` in place of a result, and the engine counts it by reason instead of
scoring it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from rlkd.spec.job import Domain

Kind = Literal["meta", "subproblem", "answer"]
"""What a judge question compares: meta-reasoning (same problem?), sub-problems (same?),
answers (equal?)."""


@dataclass(frozen=True)
class Step:
    """One step of a GSRM decomposition; a part the text did not give is ""."""

    meta: str = ""
    subproblem: str = ""
    answer: str = ""


@dataclass(frozen=True)
class Failure:
    """Why a request gave no usable result: `reason` is a short snake_case word the counts are
    keyed by (timeout, server_error, connection, unparseable_reply, ...); `detail` is for logs."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class DecomposeRequest:
    """A reasoning text to decompose, with what the GSRM prompt needs besides it."""

    reasoning: str
    problem: str = ""
    domain: Domain = "math"


@dataclass(frozen=True)
class Question:
    """One yes/no judge question comparing a teacher part with the student's part."""

    kind: Kind
    teacher: str
    student: str


Decomposition = list[Step] | Failure
Verdict = bool | Failure


@runtime_checkable
class Decomposer(Protocol):
    """Reasoning texts -> step lists, in order, one result per request."""

    model_id: str
    """Identifies the GSRM (with the prompt version it keys the teacher-decomposition cache)."""

    async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]: ...


@runtime_checkable
class Judge(Protocol):
    """Judge questions -> verdicts (True = same problem / same sub-problem / equal answers),
    in order, one result per question."""

    async def judge(self, questions: Sequence[Question]) -> list[Verdict]: ...
