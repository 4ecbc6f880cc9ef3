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

The student's steps may also arrive while the judge works (a streamed GSRM reply): then a
question waits until the student's part it compares is final, and a round holds what is ready
when it starts. The questions, their verdicts and so the reward are the same as with the whole
decomposition, since the parts asked about are the same text; but once a meta question says no,
or the teacher has no further step, no later student step can change the reward, and the GSRM
can stop writing it (`Alignment.wants_student`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from rlkd.errors import BackendError
from rlkd.gsrm.loop import run_sync
from rlkd.gsrm.types import Draft, Failure, Judge, Kind, Question, Step, Verdict


class Alignment:
    """The structure reward of one completion, computed as its verdicts come in.

    The student's steps may come in while the judge works (`update` with a `Draft`): a question
    is asked once the student's part it needs is final, and `wants_student` says when no part
    still to be written can change the reward, so the GSRM can stop. Given whole steps, every
    round asks exactly what it would ask of the finished decomposition.
    """

    def __init__(self, teacher: Sequence[Step], student: Sequence[Step] | Draft) -> None:
        self._teacher = tuple(teacher)
        self._student = student if isinstance(student, Draft) else Draft.of(student)
        self._r: list[float] = []  # r_i of the steps whose meta question has been answered
        # Planned: asked once the student's part is final (a meta question is dropped when the
        # student turns out to have no such step). The round: the questions now with the judge.
        self._planned: list[tuple[int, Kind]] = [(0, "meta")] if self._teacher else []
        self._round: list[tuple[int, Kind]] = []
        self.failures: set[str] = set()
        """Reasons of the failures met; any failure leaves the reward undefined."""

    def update(self, student: Draft) -> None:
        """The student's decomposition as far as the GSRM has written it now."""
        self._student = student

    def fail(self, reason: str) -> None:
        """The student's decomposition failed: nothing more is asked."""
        self.failures.add(reason)
        self._planned = []

    @property
    def questions(self) -> list[Question]:
        """The questions of the next round: those planned whose student part is final. [] when
        none is ready yet, or the reward is known (or undefined). Once non-empty, the round stays
        the same, whatever the student writes meanwhile, until `record` takes its verdicts."""
        if not self._round:
            self._round = self._ready()
        student = self._student.steps
        return [
            Question(kind, getattr(self._teacher[i], kind), getattr(student[i], kind))
            for i, kind in self._round
        ]

    def _ready(self) -> list[tuple[int, Kind]]:
        """Take the planned questions that can be asked now out of the plan."""
        student = self._student
        ready: list[tuple[int, Kind]] = []
        waiting: list[tuple[int, Kind]] = []
        for i, kind in self._planned:
            if student.whole and i >= len(student.steps):
                continue  # the meta question of a step the student does not have
            if not student.known(i, kind):
                waiting.append((i, kind))
            elif kind == "meta" or getattr(student.steps[i], kind):
                ready.append((i, kind))
        self._planned = waiting
        return ready

    def record(self, verdicts: Sequence[Verdict]) -> None:
        """Apply the verdicts of the round's questions, in order."""
        for (i, kind), verdict in zip(self._round, verdicts, strict=True):
            if isinstance(verdict, Failure):
                self.failures.add(verdict.reason)
            elif kind == "meta":
                self._r.append(1.0 if verdict else 0.0)
                if verdict:
                    self._planned += self._after_aligned(i)
            elif not verdict:
                self._r[i] /= 2
        self._round = []
        if self.failures:
            self._planned = []

    def _after_aligned(self, i: int) -> list[tuple[int, Kind]]:
        # The student's sub-problem and answer are checked for "" once they are final.
        planned: list[tuple[int, Kind]] = [(i + 1, "meta")] if i + 1 < len(self._teacher) else []
        return planned + [
            (i, kind) for kind in ("subproblem", "answer") if getattr(self._teacher[i], kind)
        ]

    @property
    def wants_student(self) -> bool:
        """Whether student parts not yet written can still change the reward. Once not (a meta
        mismatch, the teacher's last step reached, a failure), the GSRM can stop."""
        if self.failures or self._student.whole or not (self._planned or self._round):
            return False
        return not self._student.known(len(self._teacher) - 1, "answer")

    @property
    def reward(self) -> float:
        """The sum of r_i; meaningful once no question is pending and nothing failed."""
        if self._planned or self._round:
            raise RuntimeError("the reward is not known before the last round is recorded")
        return float(sum(self._r))


class Students(Protocol):
    """Student decompositions that are still being written while `judge_rounds` runs."""

    async def grown(self) -> bool:
        """Wait until some decomposition grew (True), or none can grow any more (False)."""
        ...

    def judged(self) -> None:
        """A round's verdicts are recorded: stop writing what no reward needs any more."""
        ...


async def judge_rounds(
    alignments: Sequence[Alignment], judge: Judge, students: Students | None = None
) -> int:
    """Ask `judge` until every alignment is settled, one call per round with the distinct
    questions of all alignments (the judge runs greedily, so a repeated question, e.g. from
    identical completions of one prompt, is asked once); returns the number of rounds.

    With `students` still being written, a round holds what is ready when it starts; when nothing
    is, the rounds wait for the students to grow."""
    rounds = 0
    while True:
        asked = [alignment.questions for alignment in alignments]
        questions = list(dict.fromkeys(q for round_questions in asked for q in round_questions))
        if not questions:
            if students is not None and await students.grown():
                continue
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
        if students is not None:
            students.judged()


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
