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

from rlkd.gsrm.types import PARTS, Draft, Kind, Step

_PART_OF_TAG: dict[str, Kind] = {  # tag names without separators -> Step field
    "metareasoning": "meta",
    "meatreasoning": "meta",
    "subthink": "meta",
    "subproblem": "subproblem",
    "query": "subproblem",
    "answer": "answer",
}
_ORDER = {part: order for order, part in enumerate(PARTS)}


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


def _part(match: re.Match[str]) -> tuple[Kind, int | None]:
    name = re.sub(r"[-_ ]", "", (match["name"] or match["bare"]).lower())
    number = match["number"] or match["bare_number"]
    return _PART_OF_TAG[name], int(number) if number else None


def parse_steps(text: str) -> list[Step]:
    """The steps written in `text`, in order; [] when it has none.

    Text before the first tag is ignored. A part opens a new step when the current step already
    has that part or a later one (so a missing part stays ""), or when both carry numbers and the
    numbers differ.
    """
    parser = StepParser()
    parser.feed(text)
    return list(parser.finish().steps)


class StepParser:
    """`parse_steps` over a text that arrives in pieces (a GSRM reply as it is streamed): after
    each piece, `draft()` holds the parts that no later text can change, so the judge can start on
    them while the GSRM writes on; `finish()` gives what `parse_steps` gives for the whole text.

    A tag never spans a line, and a tag followed by at least one more character is final: the
    brackets, number and colon it may still take come only right after it, and no other tag can
    start before it (a tag holds one bracket, and a bare one starts its line). So a tag counts
    once some text follows it, and each piece rescans only from the last counted tag or the start
    of the last line, whichever is later. A part's text is final once the next tag is.
    """

    def __init__(self) -> None:
        self._text = ""
        self._scanned = 0  # where the next tag search may start
        self._steps: list[dict[str, str]] = []  # the parts closed so far
        self._open: tuple[Kind, int] | None = None  # the last tag's part, where its text starts
        self._last_order = 3  # no open step
        self._step_number: int | None = None
        self._done = False

    def feed(self, piece: str) -> None:
        """Read the next piece of the text."""
        if self._done:
            raise RuntimeError("the parser has finished; start a new one")
        self._scanned = max(self._scanned, self._text.rfind("\n") + 1)
        self._text += piece
        self._read_tags(whole=False)

    def finish(self) -> Draft:
        """The text is complete: every part is final."""
        if not self._done:
            self._read_tags(whole=True)
            self._close_part(len(self._text))
            self._open = None
            self._done = True
        return self.draft()

    @property
    def final(self) -> int:
        """How many parts are final (`Draft.final`)."""
        if self._open is None:
            return 3 * len(self._steps)
        return 3 * (len(self._steps) - 1) + _ORDER[self._open[0]]

    def draft(self) -> Draft:
        """The decomposition as far as it is final."""
        return Draft(tuple(Step(**parts) for parts in self._steps), self.final, whole=self._done)

    def _read_tags(self, *, whole: bool) -> None:
        for match in _TAG.finditer(self._text, self._scanned):
            if not whole and match.end() == len(self._text):
                break  # it may still grow
            self._tag(match)
            self._scanned = match.end()

    def _tag(self, match: re.Match[str]) -> None:
        part, number = _part(match)
        self._close_part(match.start())
        renumbered = (
            number is not None and self._step_number is not None and number != self._step_number
        )
        if _ORDER[part] <= self._last_order or renumbered:
            self._steps.append({})
            self._step_number = None
        self._open = (part, match.end())
        self._last_order = _ORDER[part]
        self._step_number = number if number is not None else self._step_number

    def _close_part(self, end: int) -> None:
        if self._open is not None:
            part, start = self._open
            self._steps[-1][part] = self._text[start:end].strip()


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
