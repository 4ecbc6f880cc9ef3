"""The RLKD structure reward: the one implementation of the method's semantics.

For teacher steps T_1..T_n and student steps S_1..S_m (0 when either list is empty):

1. for i = 1..min(n, m): r_i = 1 if the judge says M_i(T) and M_i(S) serve the same problem,
   else 0; alignment is a prefix, so after the first 0 no further meta question is asked;
2. r_i is halved when the judge says the sub-problems Q_i differ;
3. r_i is halved when the judge says the answers A_i are not equal;
4. the reward is the sum of r_i (0..n, not normalised).

In the reference the meta, query and answer lists are parsed separately, so "i within both
query lists" is a length test. With one `Step` per index, a part the GSRM did not write is "",
and we read "within both lists" as "both steps have a non-empty sub-problem" (likewise answers):
a step with an empty part on either side is neither asked about nor halved for it. Meta
questions are asked for every aligned index, empty or not.

The judge is asked in rounds, pipelined: round k asks M_k (while aligned) together with Q_{k-1}
and A_{k-1} of a step whose r_{k-1} just became 1. So nothing is asked whose verdict cannot
change the reward (Q and A of a step with r = 0, meta after a mismatch), and a completion needs
about min(n, m) + 1 rounds. `judge_rounds` sends each round of many completions as one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rlkd.errors import BackendError
from rlkd.gsrm.loop import run_sync
from rlkd.gsrm.types import Failure, Judge, Kind, Question, Step, Verdict


class Alignment:
    """The structure reward of one completion, computed as its verdicts come in."""

    def __init__(self, teacher: Sequence[Step], student: Sequence[Step]) -> None:
        self._pairs = list(zip(teacher, student, strict=False))  # the first min(n, m) steps
        self._r: list[float] = []  # r_i of the steps whose meta question has been answered
        self._pending: list[tuple[int, Kind]] = [(0, "meta")] if self._pairs else []
        self.failures: set[str] = set()
        """Reasons of the judge failures met; any failure leaves the reward undefined."""

    @property
    def questions(self) -> list[Question]:
        """The questions of the next round; [] once the reward is known (or undefined)."""
        # A Kind is also the name of the Step field it compares.
        return [
            Question(kind, getattr(self._pairs[i][0], kind), getattr(self._pairs[i][1], kind))
            for i, kind in self._pending
        ]

    def record(self, verdicts: Sequence[Verdict]) -> None:
        """Apply the verdicts of the round's questions, in order, and plan the next round."""
        following: list[tuple[int, Kind]] = []
        for (i, kind), verdict in zip(self._pending, verdicts, strict=True):
            if isinstance(verdict, Failure):
                self.failures.add(verdict.reason)
            elif kind == "meta":
                self._r.append(1.0 if verdict else 0.0)
                if verdict:
                    following += self._after_aligned(i)
            elif not verdict:
                self._r[i] /= 2
        self._pending = [] if self.failures else following

    def _after_aligned(self, i: int) -> list[tuple[int, Kind]]:
        teacher, student = self._pairs[i]
        planned: list[tuple[int, Kind]] = [(i + 1, "meta")] if i + 1 < len(self._pairs) else []
        planned += [
            (i, kind)
            for kind in ("subproblem", "answer")
            if getattr(teacher, kind) and getattr(student, kind)
        ]
        return planned

    @property
    def reward(self) -> float:
        """The sum of r_i; meaningful once no question is pending and nothing failed."""
        if self._pending:
            raise RuntimeError("the reward is not known before the last round is recorded")
        return float(sum(self._r))


async def judge_rounds(alignments: Sequence[Alignment], judge: Judge) -> int:
    """Ask `judge` until every alignment is settled, one call per round with the distinct
    questions of all alignments (the judge runs greedily, so a repeated question, e.g. from
    identical completions of one prompt, is asked once); returns the number of rounds."""
    rounds = 0
    while True:
        asked = [alignment.questions for alignment in alignments]
        questions = list(dict.fromkeys(q for round_questions in asked for q in round_questions))
        if not questions:
            return rounds
        verdicts = await judge.judge(questions)
        if len(verdicts) != len(questions):
            raise BackendError(
                f"the judge returned {len(verdicts)} verdicts for {len(questions)} questions; "
                "a Judge must return one verdict per question, in order"
            )
        rounds += 1
        verdict_of = dict(zip(questions, verdicts, strict=True))
        for alignment, round_questions in zip(alignments, asked, strict=True):
            alignment.record([verdict_of[q] for q in round_questions])


JudgeFunction = Callable[[Kind, str, str], bool]
"""A plain judge: (kind, teacher text, student text) -> True for same / equal."""


class FunctionJudge:
    """A `Judge` over a plain function, asking it one question at a time."""

    def __init__(self, function: JudgeFunction) -> None:
        self.function = function

    async def judge(self, questions: Sequence[Question]) -> list[Verdict]:
        return [bool(self.function(q.kind, q.teacher, q.student)) for q in questions]


def structure_reward(
    student_steps: Sequence[Step], teacher_steps: Sequence[Step], judge: Judge | JudgeFunction
) -> float:
    """The structure reward of one completion, synchronously. A judge failure raises
    BackendError, since a single score has no batch to report errors with; `StructureEngine`
    scores batches and returns failures as data."""
    alignment = Alignment(teacher_steps, student_steps)
    run_sync(judge_rounds([alignment], judge if isinstance(judge, Judge) else FunctionJudge(judge)))
    if alignment.failures:
        raise BackendError(f"the judge failed: {', '.join(sorted(alignment.failures))}")
    return alignment.reward
