"""What the structure-reward engine and its backends exchange. Errors are data: a backend
returns a `Failure` in place of a result, and the engine counts it by reason instead of
scoring it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from rlkd.spec.job import Domain

Kind = Literal["meta", "subproblem", "answer"]
"""What a judge question compares: meta-reasoning (same problem?), sub-problems (same?),
answers (equal?). A Kind is also the name of the `Step` field it compares."""

PARTS: tuple[Kind, ...] = ("meta", "subproblem", "answer")
"""The parts of a step in the order the GSRM writes them."""


@dataclass(frozen=True)
class Step:
    """One step of a GSRM decomposition; a part the text did not give is ""."""

    meta: str = ""
    subproblem: str = ""
    answer: str = ""


@dataclass(frozen=True)
class Draft:
    """A decomposition as far as the GSRM has written it (a streamed reply).

    Counting the parts of `steps` in order, three per step (meta, sub-problem, answer), the first
    `final` are final: the text after them can no longer change them, a part not written is "".
    The parts after those are "" for now. `whole`: the GSRM is done and `steps` are all there is.
    """

    steps: tuple[Step, ...] = ()
    final: int = 0
    whole: bool = False

    @classmethod
    def of(cls, steps: Sequence[Step]) -> Draft:
        """A decomposition the GSRM has finished."""
        return cls(tuple(steps), 3 * len(steps), whole=True)

    def known(self, index: int, kind: Kind) -> bool:
        """Whether part `kind` of step `index` (from 0) is final."""
        return 3 * index + PARTS.index(kind) < self.final


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
StepStream = AsyncGenerator[Draft | Failure, None]
"""A decomposition as it is written: a `Draft` each time more of it is final, ending with a whole
one or with a `Failure` (nothing after it). Closing the stream early (aclose, or cancelling the
task that reads it) stops the generation: a stopped stream is not an error."""


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


@runtime_checkable
class StreamingDecomposer(Decomposer, Protocol):
    """A Decomposer that can also hand out its decompositions while it writes them, so the
    engine can judge step k while step k+1 is written, and stop the GSRM once a reward is
    decided."""

    def stream(self, requests: Sequence[DecomposeRequest]) -> list[StepStream]:
        """One stream per request, in order."""
        ...
