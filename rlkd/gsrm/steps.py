"""Reading GSRM output: the step format as text, and the thinking part of a completion.

The GSRM (and the annotator that trained it) writes one block per step:

    [Meta-reasoning 1]: why this step ...
    [Sub-problem 1]: the question it solves
    [Answer 1]: its answer

Models and the reference code spell the tags differently (`Meat-reasoning`, `sub-think`,
`Query`), change case, drop numbers, brackets or colons, and put a tag's text on its line or
on the next ones. The parser accepts all of these, so a spelling slip costs no reward.
"""

from __future__ import annotations

import re

from rlkd.gsrm.types import Step

_PART_OF_TAG = {  # tag names without separators -> Step field
    "metareasoning": "meta",
    "meatreasoning": "meta",
    "subthink": "meta",
    "subproblem": "subproblem",
    "query": "subproblem",
    "answer": "answer",
}
_ORDER = {"meta": 0, "subproblem": 1, "answer": 2}


def _name(group: str) -> str:
    return rf"(?P<{group}>me(?:ta|at)[-_ ]?reasoning|sub[-_ ]?think|sub[-_ ]?problem|query|answer)"


# A bracketed tag may stand anywhere (several steps on one line); a bare tag only at the start
# of a line (after list or emphasis marks) and with a number or a colon, so that the word
# "answer" in running text never starts a step. The lookbehind lets a run of emphasis marks be
# tried once, from its first mark, rather than again from each of its marks (quadratic).
_TAG = re.compile(
    rf"(?<!\*)\**\[[ \t]*{_name('name')}(?:[ \t]*(?P<number>\d+))?[ \t]*\][ \t*]*:?"
    rf"|^[ \t#>*-]*{_name('bare')}"
    rf"(?:[ \t]*(?P<bare_number>\d+)[ \t*]*:?|[ \t*]*:)",
    re.IGNORECASE | re.MULTILINE,
)


def _part(match: re.Match[str]) -> tuple[str, int | None]:
    name = re.sub(r"[-_ ]", "", (match["name"] or match["bare"]).lower())
    number = match["number"] or match["bare_number"]
    return _PART_OF_TAG[name], int(number) if number else None


def parse_steps(text: str) -> list[Step]:
    """The steps written in `text`, in order; [] when it has none.

    Text before the first tag is ignored. A part opens a new step when the current step already
    has that part or a later one (so a missing part stays ""), or when both carry numbers and the
    numbers differ.
    """
    matches = list(_TAG.finditer(text))
    steps: list[dict[str, str]] = []
    last_order = 3  # no open step
    step_number: int | None = None
    for index, match in enumerate(matches):
        part, number = _part(match)
        renumbered = number is not None and step_number is not None and number != step_number
        if _ORDER[part] <= last_order or renumbered:
            steps.append({})
            step_number = None
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        steps[-1][part] = text[match.end() : end].strip()
        last_order = _ORDER[part]
        step_number = number if number is not None else step_number
    return [Step(**parts) for parts in steps]


def thinking(completion: str) -> str:
    """The reasoning part of a completion: the text before `</think>`, or all of it without
    the tag; a leading `<think>` is dropped."""
    head = completion.split("</think>", 1)[0].strip()
    return head.removeprefix("<think>").strip()


def format_steps(steps: list[Step]) -> str:
    """Steps in the canonical GSRM format, which `parse_steps` reads back unchanged."""
    return "\n".join(
        f"[Meta-reasoning {n}]: {step.meta}\n[Sub-problem {n}]: {step.subproblem}\n"
        f"[Answer {n}]: {step.answer}"
        for n, step in enumerate(steps, start=1)
    )
