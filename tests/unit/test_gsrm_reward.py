"""The structure reward's semantics, pinned: the method's worked example, empty sides, length
mismatches, missing parts, and how many judge questions each case costs; the same rewards and
questions when the student's steps arrive while the judge works, and when the GSRM may stop."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rlkd.errors import BackendError
from rlkd.gsrm import Step
from rlkd.gsrm.reward import Alignment, FunctionJudge, judge_rounds, structure_reward
from rlkd.gsrm.steps import StepParser, format_steps
from rlkd.gsrm.types import Draft, Failure, Kind, Question, Verdict


def steps(*parts: str) -> list[Step]:
    """Steps from "meta|subproblem|answer" strings."""
    return [Step(*p.split("|")) for p in parts]


TEACHER = steps("m1|q1|a1", "m2|q2|a2", "m3|q3|a3", "m4|q4|a4")


class Recorder:
    """A plain judge: equal texts are the same; records every question asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[Kind, str, str]] = []

    def __call__(self, kind: Kind, teacher: str, student: str) -> bool:
        self.asked.append((kind, teacher, student))
        return teacher == student


CASES = [
    # The method's example: meta same, same, different -> r = [1, 1, 0, 0]; Q_2 differs ->
    # r_2 = 0.5; A_1 differs -> r_1 = 0.5; reward 1.0. Asked: 3 meta + 2 Q + 2 A.
    pytest.param(
        TEACHER,
        steps("m1|q1|A1", "m2|Q2|a2", "M3|q3|a3", "m4|q4|a4", "m5|q5|a5"),
        1.0,
        ["meta", "meta", "subproblem", "answer", "meta", "subproblem", "answer"],
        id="worked-example",
    ),
    pytest.param(
        TEACHER,
        TEACHER,
        4.0,
        ["meta", *["meta", "subproblem", "answer"] * 3, "subproblem", "answer"],
        id="equal",
    ),
    pytest.param([], TEACHER, 0.0, [], id="empty-teacher"),
    pytest.param(TEACHER, [], 0.0, [], id="empty-student"),
    pytest.param([], [], 0.0, [], id="both-empty"),
    pytest.param(TEACHER, steps("M1|q1|a1", "m2|q2|a2"), 0.0, ["meta"], id="first-meta-differs"),
    pytest.param(
        TEACHER,
        steps("m1|q1|a1", "m2|q2|a2"),
        2.0,
        ["meta", "meta", "subproblem", "answer", "subproblem", "answer"],
        id="student-shorter",
    ),
    pytest.param(
        steps("m1|q1|a1"),
        TEACHER,
        1.0,
        ["meta", "subproblem", "answer"],
        id="student-longer",
    ),
    pytest.param(
        steps("m1|q1|a1"),
        steps("m1|Q1|A1"),
        0.25,
        ["meta", "subproblem", "answer"],
        id="both-halve",
    ),
    pytest.param(
        steps("m1|q1|", "m2||a2"),
        steps("m1|Q1|A1", "m2|Q2|A2"),
        1.0,
        ["meta", "meta", "subproblem", "answer"],
        id="missing-teacher-parts-not-asked",
    ),
    pytest.param(
        steps("m1|q1|a1", "m2|q2|a2"),
        steps("m1||", "m2|x|"),
        1.5,
        ["meta", "meta", "subproblem"],
        id="missing-student-answers-not-asked",
    ),
    pytest.param(
        steps("m1|q1|a1", "m2|q2|a2"),
        steps("m1|q1|a1", "M2|q2|a2"),
        1.0,
        ["meta", "meta", "subproblem", "answer"],
        id="no-questions-after-misalignment",
    ),
]


@pytest.mark.parametrize(("teacher", "student", "reward", "kinds"), CASES)
def test_semantics_and_questions(
    teacher: list[Step], student: list[Step], reward: float, kinds: list[str]
) -> None:
    judge = Recorder()
    assert structure_reward(student, teacher, judge) == reward
    assert [kind for kind, _, _ in judge.asked] == kinds


async def judged_while_written(
    teacher: list[Step], student: list[Step], judge: Recorder
) -> tuple[Alignment, str | None]:
    """Score `student` as a GSRM would stream it, one character at a time, judging whatever is
    ready after each; returns the alignment and the text written when it stopped wanting more
    (None: it wanted all of it)."""
    alignment = Alignment(teacher, Draft())
    parser = StepParser()
    text = format_steps(student)
    stopped = None
    for end in range(1, len(text) + 1):
        parser.feed(text[end - 1])
        alignment.update(parser.draft())
        await judge_rounds([alignment], FunctionJudge(judge))
        if stopped is None and not alignment.wants_student:
            stopped = text[:end]
    alignment.update(parser.finish())
    await judge_rounds([alignment], FunctionJudge(judge))
    return alignment, stopped


@pytest.mark.parametrize(("teacher", "student", "reward", "kinds"), CASES)
async def test_a_student_judged_while_it_is_written_gets_the_same_reward_and_questions(
    teacher: list[Step], student: list[Step], reward: float, kinds: list[str]
) -> None:
    whole, streamed = Recorder(), Recorder()
    structure_reward(student, teacher, whole)
    alignment, _ = await judged_while_written(teacher, student, streamed)
    assert alignment.reward == reward
    assert sorted(streamed.asked) == sorted(whole.asked)  # asked as soon as ready: in other order


@pytest.mark.parametrize(
    ("teacher", "student", "written", "unwritten"),
    [
        pytest.param(
            TEACHER,
            steps("m1|q1|A1", "m2|Q2|a2", "M3|q3|a3", "m4|q4|a4", "m5|q5|a5"),
            "[Sub-problem 3]",
            "[Answer 3]",
            id="meta-mismatch-at-3-once-its-meta-is-final",
        ),
        pytest.param(
            TEACHER, steps("M1|q1|a1", "m2|q2|a2"), "[Sub-problem 1]", "[Answer 1]", id="at-1"
        ),
        pytest.param(
            steps("m1|q1|a1"),
            TEACHER,
            "[Meta-reasoning 2]",
            "[Sub-problem 2]",
            id="teacher-has-no-step-2-once-answer-1-is-final",
        ),
    ],
)
async def test_the_gsrm_may_stop_once_no_later_step_can_change_the_reward(
    teacher: list[Step], student: list[Step], written: str, unwritten: str
) -> None:
    _, stopped = await judged_while_written(teacher, student, Recorder())
    assert stopped is not None
    assert written in stopped
    assert unwritten not in stopped


@pytest.mark.parametrize(
    "student",
    [steps("m1|q1|a1", "m2|q2|a2"), TEACHER],
    ids=["student-shorter", "as-long"],
)
async def test_an_aligned_student_no_longer_than_its_teacher_is_read_to_the_end(
    student: list[Step],
) -> None:
    _, stopped = await judged_while_written(TEACHER, student, Recorder())
    assert stopped is None


def test_a_failed_student_wants_nothing_more_and_asks_nothing() -> None:
    alignment = Alignment(TEACHER, Draft())
    assert alignment.wants_student
    alignment.fail("connection")
    assert not alignment.wants_student
    assert alignment.questions == []
    assert alignment.failures == {"connection"}


def test_a_round_stays_the_same_while_the_student_grows() -> None:
    alignment = Alignment(TEACHER, Draft())
    assert alignment.questions == []  # nothing final yet
    alignment.update(Draft((Step("m1"),), final=1))
    assert [q.kind for q in alignment.questions] == ["meta"]
    alignment.update(Draft.of(steps("m1|q1|a1", "m2|q2|a2")))
    assert [q.kind for q in alignment.questions] == ["meta"]  # the round the judge has
    alignment.record([True])
    assert [q.kind for q in alignment.questions] == ["meta", "subproblem", "answer"]


def test_worked_example_rounds() -> None:
    """Round k asks meta_k with Q and A of step k-1, so 3 rounds cover the example."""
    rounds: list[list[tuple[str, str, str]]] = []

    class RoundJudge:
        async def judge(self, questions: Sequence[Question]) -> list[Verdict]:
            rounds.append([(q.kind, q.teacher, q.student) for q in questions])
            return [q.teacher == q.student for q in questions]

    student = steps("m1|q1|A1", "m2|Q2|a2", "M3|q3|a3", "m4|q4|a4", "m5|q5|a5")
    assert structure_reward(student, TEACHER, RoundJudge()) == 1.0
    assert rounds == [
        [("meta", "m1", "m1")],
        [("meta", "m2", "m2"), ("subproblem", "q1", "q1"), ("answer", "a1", "A1")],
        [("meta", "m3", "M3"), ("subproblem", "q2", "Q2"), ("answer", "a2", "a2")],
    ]


class ScriptedJudge:
    def __init__(self, verdicts: list[Verdict]) -> None:
        self.verdicts = verdicts

    async def judge(self, questions: Sequence[Question]) -> list[Verdict]:
        return self.verdicts[: len(questions)]


def test_judge_failure_raises_in_the_sync_api() -> None:
    judge = ScriptedJudge([Failure("timeout", "read timed out")])
    with pytest.raises(BackendError, match="timeout"):
        structure_reward(TEACHER, TEACHER, judge)


def test_a_judge_that_drops_verdicts_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="returned 0 verdicts for 1 questions"):
        structure_reward(TEACHER, TEACHER, ScriptedJudge([]))


async def test_failure_stops_questions_for_that_completion_only() -> None:
    failing = Alignment(steps("x1|y1|z1", "x2|y2|z2"), steps("x1|y1|z1", "x2|y2|z2"))
    fine = Alignment(TEACHER, TEACHER)
    rounds: list[list[Question]] = []

    class FailX:
        async def judge(self, questions: Sequence[Question]) -> list[Verdict]:
            rounds.append(list(questions))
            return [Failure("server_error") if q.teacher == "x1" else True for q in questions]

    assert await judge_rounds([failing, fine], FailX()) == 5
    assert failing.failures == {"server_error"} and not failing.questions
    assert fine.reward == 4.0 and not fine.failures
    assert sum(q.teacher.startswith("x") for r in rounds for q in r) == 1


async def test_a_question_repeated_in_a_round_is_asked_once() -> None:
    judge = Recorder()
    same = [Alignment(TEACHER, steps("m1|q1|a1")) for _ in range(4)]
    await judge_rounds(same, FunctionJudge(judge))
    assert [kind for kind, _, _ in judge.asked] == ["meta", "subproblem", "answer"]
    assert [a.reward for a in same] == [1.0] * 4


def test_reward_before_the_last_round_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not known"):
        _ = Alignment(TEACHER, TEACHER).reward
