"""The batch engine: one decomposer call per side, one judge call per round, teacher
decompositions cached (memory and store), failures counted and scored None, never 0; streamed
student decompositions judged while they are written and stopped once their rewards are
decided, with the same rewards."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from rlkd.errors import BackendError
from rlkd.gsrm import Step, parse_steps
from rlkd.gsrm.engine import (
    BatchResult,
    ScoreItem,
    StructureEngine,
    TeacherCache,
    precompute_teachers,
)
from rlkd.gsrm.reward import structure_reward
from rlkd.gsrm.steps import StepParser, format_steps, thinking
from rlkd.gsrm.types import (
    DecomposeRequest,
    Decomposition,
    Failure,
    Question,
    StepStream,
    Verdict,
)
from rlkd.store import Store


class Decomposer:
    """Parses text already in step format; "FAIL:<reason>" in a text fails it."""

    def __init__(self, model_id: str = "gsrm-a") -> None:
        self.model_id = model_id
        self.calls: list[list[str]] = []

    async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
        self.calls.append([r.reasoning for r in requests])
        return [
            Failure(r.reasoning.split("FAIL:")[1].split()[0])
            if "FAIL:" in r.reasoning
            else parse_steps(r.reasoning)
            for r in requests
        ]


class Judge:
    """Equal texts are the same; a part containing "JFAIL" fails its question."""

    def __init__(self) -> None:
        self.rounds: list[list[Question]] = []

    async def judge(self, questions: Sequence[Question]) -> list[Verdict]:
        self.rounds.append(list(questions))
        return [
            Failure("unparseable_reply") if "JFAIL" in q.student else q.teacher == q.student
            for q in questions
        ]


def text(*parts: str) -> str:
    return format_steps([Step(*p.split("|")) for p in parts])


TEACHER_A = text("m1|q1|a1", "m2|q2|a2", "m3|q3|a3", "m4|q4|a4")
TEACHER_B = text("n1|p1|b1", "n2|p2|b2")
EXAMPLE = text("m1|q1|A1", "m2|Q2|a2", "M3|q3|a3", "m4|q4|a4", "m5|q5|a5")  # scores 1.0


def completion(thinking: str) -> str:
    return f"<think>\n{thinking}\n</think>\n<answer>\n4\n</answer>"


def batch() -> list[ScoreItem]:
    """Two prompts, four completions each (a GRPO batch); teachers given as reasoning text."""
    a = [EXAMPLE, TEACHER_A, text("M1|q1|a1"), text("m1|q1|a1", "m2|q2|a2")]
    b = [TEACHER_B, text("n1|p1|b1"), "no steps at all", ""]
    return [ScoreItem(completion(s), TEACHER_A, "pa", "math") for s in a] + [
        ScoreItem(completion(s), f"<think>{TEACHER_B}</think>", "pb", "code") for s in b
    ]


async def test_batch_rewards_match_the_single_completion_reward() -> None:
    decomposer, judge = Decomposer(), Judge()
    result = await StructureEngine(decomposer, judge).score(batch())
    assert result == BatchResult([1.0, 4.0, 0.0, 2.0, 2.0, 1.0, 0.0, 0.0], {})
    for item, reward in zip(batch(), result.rewards, strict=True):
        student = parse_steps(thinking(item.completion))
        teacher = parse_steps(thinking(str(item.teacher)))
        assert structure_reward(student, teacher, lambda k, t, s: t == s) == reward


async def test_one_decomposer_call_per_side_and_one_judge_call_per_round() -> None:
    decomposer, judge = Decomposer(), Judge()
    await StructureEngine(decomposer, judge).score(batch())
    students, teachers = decomposer.calls
    # Every distinct non-empty student text once (the empty one needs no GSRM) ...
    assert len(students) == 7
    # ... and each distinct teacher text once, though four completions share it.
    assert sorted(teachers) == sorted([TEACHER_A, TEACHER_B])
    # The longest alignment (4 equal steps) takes 5 rounds, which all completions share:
    # round k holds meta_k of each aligned completion with Q and A of its step k-1, each
    # distinct question once (completions of one prompt often ask the same one).
    assert [len(r) for r in judge.rounds] == [3, 7, 7, 3, 2]
    assert all(len(set(r)) == len(r) for r in judge.rounds)


async def test_teacher_decompositions_are_cached_for_the_run() -> None:
    decomposer = Decomposer()
    engine = StructureEngine(decomposer, Judge())
    await engine.score(batch())
    await engine.score(batch())
    assert len(decomposer.calls) == 3  # students, teachers, students again


async def test_teacher_decompositions_are_cached_in_the_store(store: Store) -> None:
    await StructureEngine(Decomposer(), Judge(), store).score(batch())
    assert len(store.list("cache/gsrm-teacher/")) == 2

    again = Decomposer()
    result = await StructureEngine(again, Judge(), store).score(batch())
    assert len(again.calls) == 1  # the students only
    assert result.rewards[:2] == [1.0, 4.0]

    other_model = Decomposer(model_id="gsrm-b")
    await StructureEngine(other_model, Judge(), store).score(batch())
    assert len(other_model.calls) == 2  # the cache is keyed by the GSRM model id


async def test_failed_teacher_decomposition_is_counted_and_not_cached(store: Store) -> None:
    items = [ScoreItem(completion(TEACHER_A), "FAIL:timeout " + TEACHER_A)] * 3
    decomposer = Decomposer()
    engine = StructureEngine(decomposer, Judge(), store)
    assert await engine.score(items) == BatchResult([None] * 3, {"timeout": 3})
    assert store.list("cache/") == []
    await engine.score(items)
    assert decomposer.calls[-1] == ["FAIL:timeout " + TEACHER_A]  # asked again, not cached


async def test_failures_give_none_and_are_counted_by_reason() -> None:
    items = [
        ScoreItem(completion("FAIL:server_error"), TEACHER_A),
        ScoreItem(completion(text("m1|q1|JFAIL")), TEACHER_A),
        ScoreItem(completion(text("m1|q1|a1")), TEACHER_A),
        ScoreItem(completion("FAIL:timeout"), "FAIL:connection"),
    ]
    result = await StructureEngine(Decomposer(), Judge()).score(items)
    assert result.rewards == [None, None, 1.0, None]
    assert result.errors == {
        "connection": 1,
        "server_error": 1,
        "timeout": 1,
        "unparseable_reply": 1,
    }


async def test_empty_decompositions_score_zero_without_judging() -> None:
    judge = Judge()
    items = [ScoreItem(completion("prose only"), TEACHER_A), ScoreItem(completion(""), "prose")]
    assert await StructureEngine(Decomposer(), judge).score(items) == BatchResult([0.0, 0.0])
    assert judge.rounds == []


async def test_precomputed_teacher_steps_need_no_teacher_decomposition() -> None:
    decomposer = Decomposer()
    teacher = tuple(parse_steps(TEACHER_A))
    result = await StructureEngine(decomposer, Judge()).score(
        [ScoreItem(completion(EXAMPLE), teacher)]
    )
    assert result.rewards == [1.0]
    assert decomposer.calls == [[EXAMPLE]]


def test_score_sync_without_a_running_loop() -> None:
    assert StructureEngine(Decomposer(), Judge()).score_sync(batch()).rewards[0] == 1.0


async def test_score_sync_inside_a_running_loop() -> None:
    assert StructureEngine(Decomposer(), Judge()).score_sync(batch()).rewards[0] == 1.0


async def test_precompute_fills_the_cache_in_batches(store: Store) -> None:
    teachers = [text(f"m{i}|q{i}|a{i}") for i in range(5)]
    requests = [DecomposeRequest(t, f"p{i}") for i, t in enumerate(teachers)]
    requests.append(DecomposeRequest("FAIL:timeout", "p5"))
    decomposer = Decomposer()
    cache = TeacherCache(decomposer, store)  # a prepare phase needs no judge
    assert await precompute_teachers(cache, requests, batch_size=4) == {"timeout": 1}
    assert [len(c) for c in decomposer.calls] == [4, 2]
    assert len(store.list("cache/gsrm-teacher/")) == 5

    fresh = Decomposer()
    items = [ScoreItem(completion(t), t, f"p{i}") for i, t in enumerate(teachers)]
    result = await StructureEngine(fresh, Judge(), store).score(items)
    assert result.rewards == [1.0] * 5
    assert len(fresh.calls) == 1  # students only


async def test_precompute_rejects_a_zero_batch_size() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        await precompute_teachers(TeacherCache(Decomposer()), [], batch_size=0)


async def test_a_decomposer_that_drops_results_is_a_backend_error() -> None:
    class Short(Decomposer):
        async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
            return []

    with pytest.raises(BackendError, match="returned 0 results for 1 requests"):
        await StructureEngine(Short(), Judge()).score([ScoreItem(completion("x"), "")])


@pytest.mark.parametrize(
    "change",
    [
        {"problem": "another problem"},
        {"domain": "science"},
        {"reasoning": TEACHER_B},
        {"prompt_version": "rlkd-gsrm-v0"},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_cache_key_covers_every_input(
    store: Store, change: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    request = DecomposeRequest(TEACHER_A, "p", "math")
    await TeacherCache(Decomposer(), store).steps([request])
    if "prompt_version" in change:
        monkeypatch.setattr("rlkd.gsrm.engine.PROMPT_VERSION", change["prompt_version"])
    else:
        request = DecomposeRequest(**{**vars(request), **change})
    decomposer = Decomposer()
    await TeacherCache(decomposer, store).steps([request])
    assert len(decomposer.calls) == 1
    assert len(store.list("cache/gsrm-teacher/")) == 2


class StreamingDecomposer(Decomposer):
    """Also streams text already in step format, one character per step of the event loop, and
    notes what each stream had written when it was closed. A scripted stand-in for a GSRM: the
    real streams (openai, transformers) run against real servers in tests/integration and
    tests/e2e, where what the engine does is too fast to follow step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.streamed: list[str] = []
        self.closed: dict[str, str] = {}  # text -> what was written when its stream was closed
        self.whole: list[str] = []  # the texts streamed to their ends

    def stream(self, requests: Sequence[DecomposeRequest]) -> list[StepStream]:
        return [self._stream(r.reasoning) for r in requests]

    async def _stream(self, text: str) -> StepStream:
        self.streamed.append(text)
        parser = StepParser()
        written = ""
        try:
            for char in text:
                if text[len(written) :].startswith("FAIL:"):
                    written = ""  # a failure is not a close
                    yield Failure(text.split("FAIL:")[1].split()[0])
                    return
                written += char
                parser.feed(char)
                yield parser.draft()
                await asyncio.sleep(0)
            written = ""
            self.whole.append(text)
            yield parser.finish()
        finally:
            if written:
                self.closed[text] = written


def students(items: list[ScoreItem]) -> list[str]:
    return [thinking(i.completion) for i in items]


async def test_streamed_students_get_the_same_rewards_and_stop_once_decided() -> None:
    decomposer = StreamingDecomposer()
    result = await StructureEngine(decomposer, Judge()).score(batch())
    whole = await StructureEngine(Decomposer(), Judge()).score(batch())
    assert result == whole
    assert sorted(decomposer.streamed) == sorted(set(students(batch())) - {""})
    assert decomposer.calls == [[TEACHER_A, TEACHER_B]]  # teachers stay whole
    # Aborted: EXAMPLE once meta 3 differs, M1|q1|a1 once meta 1 does; the others, aligned to
    # their ends (or without steps), are read to the end.
    assert decomposer.closed.keys() == {EXAMPLE, text("M1|q1|a1")}
    assert len(decomposer.whole) == len(decomposer.streamed) - 2
    example = decomposer.closed[EXAMPLE]
    assert "[Sub-problem 3]" in example and "[Answer 3]" not in example
    assert "[Answer 1]" not in decomposer.closed[text("M1|q1|a1")]


async def test_a_student_longer_than_its_teacher_stops_after_the_teachers_last_step() -> None:
    longer = text("n1|p1|b1", "n2|p2|b2", "n3|p3|b3", "n4|p4|b4")
    decomposer = StreamingDecomposer()
    engine = StructureEngine(decomposer, Judge())
    result = await engine.score([ScoreItem(completion(longer), TEACHER_B)])
    assert result == BatchResult([2.0])
    written = decomposer.closed[longer]
    assert "[Meta-reasoning 3]" in written and "[Sub-problem 3]" not in written


async def test_a_stream_read_by_two_items_stops_when_neither_wants_more() -> None:
    student = text("m1|q1|a1", "m2|q2|a2", "x3|q3|a3")
    decomposer = StreamingDecomposer()
    items = [ScoreItem(completion(student), TEACHER_A), ScoreItem(completion(student), TEACHER_A)]
    result = await StructureEngine(decomposer, Judge()).score(items)
    assert result == BatchResult([2.0, 2.0])
    assert decomposer.streamed == [student]
    assert "[Answer 3]" not in decomposer.closed[student]


async def test_a_student_with_an_empty_teacher_is_not_written_on() -> None:
    decomposer = StreamingDecomposer()
    result = await StructureEngine(decomposer, Judge()).score([ScoreItem(completion(EXAMPLE), "")])
    assert result == BatchResult([0.0])
    assert decomposer.whole == []


async def test_a_stream_that_breaks_is_a_counted_failure_not_a_partial_reward() -> None:
    broken = text("m1|q1|a1", "m2|q2|a2") + "\nFAIL:connection and more"
    items = [ScoreItem(completion(broken), TEACHER_A), ScoreItem(completion(EXAMPLE), TEACHER_A)]
    result = await StructureEngine(StreamingDecomposer(), Judge()).score(items)
    assert result == BatchResult([None, 1.0], {"connection": 1})


async def test_a_stream_that_ends_without_a_whole_decomposition_is_a_backend_error() -> None:
    class Truncating(StreamingDecomposer):
        async def _stream(self, text: str) -> StepStream:
            yield StepParser().draft()

    with pytest.raises(BackendError, match="ended with neither a whole decomposition"):
        await StructureEngine(Truncating(), Judge()).score([ScoreItem(completion(EXAMPLE), "x")])
