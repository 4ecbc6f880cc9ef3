"""The pure parts of `rlkd annotate`: which replies can train the GSRM, what the annotator is
told when one cannot, and what makes two teacher paths one."""

from __future__ import annotations

import pytest

from rlkd.build.annotate import malformed, path_id, reminder
from rlkd.gsrm.steps import parse_steps
from rlkd.gsrm.types import DecomposeRequest, Step

WHOLE = Step("Name the unknown.", "What is x?", "5")


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ([WHOLE], None),
        ([WHOLE, WHOLE], None),
        ([], "no_steps"),
        ([WHOLE, Step("Use it.", "What is 2x?", "")], "missing_parts"),
        ([Step("", "What is x?", "5")], "missing_parts"),
    ],
)
def test_a_decomposition_trains_the_gsrm_only_when_every_step_is_whole(steps, reason) -> None:
    assert malformed(steps) == reason


def test_the_reminder_says_what_is_missing_and_shows_the_format() -> None:
    steps = [WHOLE, Step("Use it.", "", ""), Step("", "Q", "A")]
    text = reminder("missing_parts", steps)
    assert text.startswith(
        "In your reply step 2 has no sub-problem, step 2 has no answer, step 3 has no "
        "meta-reasoning. Write the whole decomposition again"
    )
    assert parse_steps(text.split("as:\n")[1]) == [Step("...", "...", "...")]
    assert reminder("no_steps", []).startswith("Your reply has no steps in the format asked for.")


def test_a_path_is_its_domain_problem_and_reasoning() -> None:
    path = DecomposeRequest("x is 5", "find x", "math")
    assert path_id(path) == path_id(DecomposeRequest("x is 5", "find x", "math"))
    others = [
        DecomposeRequest("x is 6", "find x", "math"),
        DecomposeRequest("x is 5", "find y", "math"),
        DecomposeRequest("x is 5", "find x", "puzzle"),
    ]
    assert len({path_id(path), *map(path_id, others)}) == 4
    # No two fields run into one another, whatever the text holds.
    assert path_id(DecomposeRequest("c", "a\0b")) != path_id(DecomposeRequest("b\0c", "a"))
