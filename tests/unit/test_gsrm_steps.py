"""parse_steps reads every tag spelling the method lists; format_steps writes what it reads; and
read in pieces, as a GSRM streams it, a text gives the same steps, and a part counts as final
only when no later text can change it."""

from __future__ import annotations

import pytest

from rlkd.gsrm import Step, parse_steps
from rlkd.gsrm.steps import StepParser, format_steps, thinking
from rlkd.gsrm.types import PARTS, Draft

ONE = [Step("m1", "q1", "a1")]
TWO = [Step("m1", "q1", "a1"), Step("m2", "q2", "a2")]


SPELLINGS = [
    pytest.param(
        "[Meta-reasoning 1]: m1\n[Sub-problem 1]: q1\n[Answer 1]: a1\n"
        "[Meta-reasoning 2]: m2\n[Sub-problem 2]: q2\n[Answer 2]: a2",
        TWO,
        id="canonical",
    ),
    pytest.param("[Meat-reasoning 1]: m1\n[Query 1]: q1\n[Answer 1]: a1", ONE, id="meat-and-query"),
    pytest.param("[sub-think 1] m1\n[Query 1] q1\n[Answer 1] a1", ONE, id="reference-tags"),
    pytest.param("[META-REASONING 1]: m1\n[sub-PROBLEM 1]: q1\n[answer 1]: a1", ONE, id="any-case"),
    pytest.param(
        "[Meta-reasoning]: m1\n[Sub-problem]: q1\n[Answer]: a1\n"
        "[Meta-reasoning]: m2\n[Sub-problem]: q2\n[Answer]: a2",
        TWO,
        id="unnumbered",
    ),
    pytest.param(
        "[Meta-reasoning 1] m1 [Sub-problem 1] q1 [Answer 1] a1 "
        "[Meta-reasoning 2] m2 [Sub-problem 2] q2 [Answer 2] a2",
        TWO,
        id="inline-no-colon",
    ),
    pytest.param(
        "[Meta-reasoning 1]:\nm1\n\n[Sub-problem 1]:\nq1\n[Answer 1]:\na1", ONE, id="next-line"
    ),
    pytest.param("Meta-reasoning 1: m1\nSub-problem 1: q1\nAnswer 1: a1", ONE, id="bare-numbered"),
    pytest.param("meta reasoning: m1\nquery: q1\nanswer: a1", ONE, id="bare-colon"),
    pytest.param(
        "**[Meta-reasoning 1]**: m1\n**[Sub-problem 1]**: q1\n**[Answer 1]**: a1",
        ONE,
        id="bold",
    ),
    pytest.param(
        "Sure, here is the decomposition.\n[Meta-reasoning 1]: m1\n[Sub-problem 1]: q1\n"
        "[Answer 1]: a1",
        ONE,
        id="preamble-ignored",
    ),
    pytest.param(
        "[Meta-reasoning 1]: the answer is near\n[Sub-problem 1]: q1\n[Answer 1]: a1",
        [Step("the answer is near", "q1", "a1")],
        id="word-answer-in-text-is-no-tag",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SPELLINGS)
def test_spellings(text: str, expected: list[Step]) -> None:
    assert parse_steps(text) == expected


MISSING_PARTS = [
    pytest.param(
        "[Meta-reasoning 1]: m1\n[Answer 1]: a1\n[Meta-reasoning 2]: m2\n[Sub-problem 2]: q2",
        [Step("m1", "", "a1"), Step("m2", "q2", "")],
        id="missing-subproblem-and-answer",
    ),
    pytest.param(
        "[Sub-problem 1]: q1\n[Answer 1]: a1\n[Sub-problem 2]: q2\n[Answer 2]: a2",
        [Step("", "q1", "a1"), Step("", "q2", "a2")],
        id="missing-meta",
    ),
    pytest.param(
        "[Meta-reasoning 1]: m1\n[Answer 2]: a2",
        [Step("m1", "", ""), Step("", "", "a2")],
        id="number-change-opens-a-step",
    ),
    pytest.param("[Meta-reasoning 1]:\n[Sub-problem 1]: q1", [Step("", "q1", "")], id="empty"),
]


@pytest.mark.parametrize(("text", "expected"), MISSING_PARTS)
def test_missing_parts_stay_empty(text: str, expected: list[Step]) -> None:
    assert parse_steps(text) == expected


STREAMED = [
    *SPELLINGS,
    *MISSING_PARTS,
    pytest.param(
        "Answer 1: a\nAnswer 12: b\n[Meta-reasoning 3] **[Answer 3]**: c", None, id="numbers-grow"
    ),
    pytest.param("[Meta-reasoning 1]: m1\n[Sub-problem 1]: q1\n[Answer 1]: a", None, id="cut"),
    pytest.param("[Meta-reasoning 1]: m1 *** ** [Answer 1]*:** a1 [Query]", None, id="marks"),
]


@pytest.mark.parametrize("text", [p.values[0] for p in STREAMED], ids=[p.id for p in STREAMED])
def test_a_text_split_anywhere_parses_as_a_whole(text: str) -> None:
    for cut in range(len(text) + 1):
        parser = StepParser()
        parser.feed(text[:cut])
        parser.feed(text[cut:])
        assert parser.finish() == Draft.of(parse_steps(text)), cut


@pytest.mark.parametrize("text", [p.values[0] for p in STREAMED], ids=[p.id for p in STREAMED])
def test_what_a_draft_holds_as_final_is_what_the_whole_text_says(text: str) -> None:
    """One character at a time, so every tag is split at every position."""
    whole = parse_steps(text)
    parser = StepParser()
    finals = []
    for char in text:
        parser.feed(char)
        draft = parser.draft()
        finals.append(draft.final)
        assert not draft.whole
        for i, step in enumerate(draft.steps):
            for kind in PARTS:
                if draft.known(i, kind):
                    assert getattr(step, kind) == getattr(whole[i], kind)
                else:
                    assert getattr(step, kind) == ""
    assert finals == sorted(finals)
    assert parser.finish() == Draft.of(whole)


@pytest.mark.parametrize(
    ("prefix", "draft"),
    [
        pytest.param("[Meta-reasoning 1]: m", Draft((Step(),), 0), id="open-part"),
        pytest.param(
            "[Meta-reasoning 1]: m1\n[Sub-problem 1]", Draft((Step(),), 0), id="tag-may-grow"
        ),
        pytest.param(
            "[Meta-reasoning 1]: m1\n[Sub-problem 1]: ", Draft((Step("m1"),), 1), id="meta"
        ),
        pytest.param(
            "[Meta-reasoning 1]: m1\n[Answer 1]: a", Draft((Step("m1"),), 2), id="skipped-part"
        ),
        pytest.param("[Sub-problem 1]: q", Draft((Step(),), 1), id="no-meta"),
        pytest.param(
            "[Meta-reasoning 1]: m1\n[Sub-problem 1]: q1\n[Answer 1]: a1\n[Meta-reasoning 2]: m",
            Draft((Step("m1", "q1", "a1"), Step()), 3),
            id="step-1-whole",
        ),
        pytest.param("Answer 1", Draft(), id="bare-number-may-grow"),
        pytest.param("Answer 1: a", Draft((Step(),), 2), id="bare"),
        pytest.param("[Answer", Draft(), id="half-a-tag"),
        pytest.param("preamble only", Draft(), id="no-tag"),
    ],
)
def test_a_part_is_final_once_the_next_tag_is(prefix: str, draft: Draft) -> None:
    parser = StepParser()
    parser.feed(prefix)
    assert parser.draft() == draft


@pytest.mark.parametrize(
    "text",
    [
        "[Meta-reasoning 1]: m1\n[Sub-problem 1]: q1\n[Answer 1]: a1\n[Meta-reasoning 2]: half",
        "[Meta-reasoning 1]: m1\n[Sub-problem 1]",
        "[Meta-reasoning 1]: m1\n[Sub-",
        "",
    ],
    ids=["mid-part", "on-a-tag", "mid-tag", "nothing"],
)
def test_a_stream_that_ends_mid_step_gives_what_parse_steps_gives(text: str) -> None:
    parser = StepParser()
    for char in text:
        parser.feed(char)
    assert parser.finish() == Draft.of(parse_steps(text))


def test_a_finished_parser_takes_no_more_text() -> None:
    parser = StepParser()
    parser.finish()
    with pytest.raises(RuntimeError, match="finished"):
        parser.feed("x")


@pytest.mark.parametrize(
    "text", ["", "   ", "I think the answer is 4.", "Answer is 4", "[Step 1]: nothing"]
)
def test_no_steps(text: str) -> None:
    assert parse_steps(text) == []


def test_long_runs_of_emphasis_marks() -> None:
    """A run not followed by a tag stays text; a run right before a tag belongs to the tag (as
    in **[Answer 1]**). Runs this long took minutes when each mark started a fresh scan."""
    stars = "*" * 100_000
    text = f"[Meta-reasoning 1]: m1 {stars}\n[Sub-problem 1]: q1\n{stars}[Answer 1]: a1 {stars}"
    assert parse_steps(text) == [Step(f"m1 {stars}", "q1", f"a1 {stars}")]


def test_format_round_trip() -> None:
    steps = [Step("why\non two lines", "what?", "42"), Step("", "q", ""), Step("m", "", "a")]
    assert parse_steps(format_steps(steps)) == steps


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>\nabc\n</think>\n<answer>\n4\n</answer>", "abc"),
        ("abc</think>rest</think>", "abc"),
        ("no tag at all", "no tag at all"),
        ("<think>unfinished", "unfinished"),
    ],
)
def test_thinking(completion: str, expected: str) -> None:
    assert thinking(completion) == expected
