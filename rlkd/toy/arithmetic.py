"""The toy reasoning domain: sums of bracketed groups, worked out one group at a time.

    Compute (4+3)+(7+3)+(6+3).

Each group is a sub-problem, and the groups may be worked out in any order (k groups, k! valid
orders); the results are then added from the left, one addition per step. The scripted teacher
always takes the rightmost group still open, a preference the student can read off the problem
text; a student warmed up on random valid orders solves the problems but does not share it,
which is the structure RLKD has to transfer.

Reasoning is written in the GSRM step format that `rlkd.gsrm.steps.parse_steps` reads, and its
meta-reasoning names the group it picks ("Take (7+3)."), so the `rule` judge (normalised text
equality) says "same" at step i exactly when student and teacher picked the same group there.

The groups of a problem share their operation and second operand and differ in their first
digit: picking a group is then choosing one token of the problem, which a tiny model learns in a
couple of minutes on a CPU, while copying groups that differ anywhere takes it much longer.
Pure Python: no ML stack, no other rlkd module.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import permutations

GROUP_COUNTS = (1, 2, 3)
"""How many groups a problem has."""
GROUP_WEIGHTS = (1, 2, 2)
"""Relative frequency of each group count: most problems have several valid orders."""
MAX_DIGIT = 9
"""Operands are 1..MAX_DIGIT."""
TEST_SHARE = 8
"""One problem in TEST_SHARE (by a hash of its text) belongs to the held-out split."""


@dataclass(frozen=True)
class Group:
    """One bracketed group `a op b` of single digits (a - b is positive)."""

    a: int
    op: str
    b: int

    @property
    def text(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def value(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b


@dataclass(frozen=True)
class Problem:
    """A sum of groups with distinct first operands."""

    groups: tuple[Group, ...]

    @property
    def text(self) -> str:
        return "Compute " + "+".join(f"({g.text})" for g in self.groups) + "."

    @property
    def answer(self) -> int:
        return sum(g.value for g in self.groups)

    @property
    def orders(self) -> int:
        """How many valid orders there are to work out the groups."""
        return math.factorial(len(self.groups))

    @property
    def teacher_order(self) -> tuple[int, ...]:
        """The teacher's order: rightmost group first."""
        return tuple(reversed(range(len(self.groups))))

    def valid_orders(self) -> Iterator[tuple[int, ...]]:
        """Every order of the groups (indexes into `groups`), each one correct reasoning."""
        return permutations(range(len(self.groups)))


def reasoning(problem: Problem, order: Sequence[int]) -> str:
    """The step-format reasoning that works out the groups in `order`, then adds the results
    from the left."""
    if sorted(order) != list(range(len(problem.groups))):
        raise ValueError(f"{tuple(order)} is not an order of {len(problem.groups)} groups")
    groups = problem.groups
    steps = [(f"Take ({groups[i].text}).", groups[i].text, groups[i].value) for i in order]
    total = groups[0].value
    for n, group in enumerate(groups[1:], start=1):
        meta = "Add the results." if n == 1 else "Add the next result."
        steps.append((meta, f"{total}+{group.value}", total + group.value))
        total += group.value
    return "\n".join(
        f"[Meta-reasoning {i}]: {meta}\n[Sub-problem {i}]: {question}\n[Answer {i}]: {answer}"
        for i, (meta, question, answer) in enumerate(steps, start=1)
    )


def completion(problem: Problem, order: Sequence[int]) -> str:
    """What a student should write for `problem`, reasoning in `order`: the format the recipe's
    format and tag-count rewards give 1 to, with the answer boxed."""
    return (
        f"<think>\n{reasoning(problem, order)}\n</think>\n"
        f"<answer>\n\\boxed{{{problem.answer}}}\n</answer>"
    )


def random_problem(rng: random.Random) -> Problem:
    """One problem drawn from `rng`: 1 to 3 groups `a op c` that share the operation and its
    second operand c, each with its own first operand a (so a group is named by its a)."""
    (count,) = rng.choices(GROUP_COUNTS, weights=GROUP_WEIGHTS)
    op = rng.choice("+-")
    c = rng.randint(1, MAX_DIGIT - count) if op == "-" else rng.randint(1, MAX_DIGIT)
    firsts = range(c + 1, MAX_DIGIT + 1) if op == "-" else range(1, MAX_DIGIT + 1)
    return Problem(tuple(Group(a, op, c) for a in rng.sample(firsts, count)))


def is_test(problem: Problem) -> bool:
    """Whether `problem` belongs to the held-out split: decided by its text alone, so the
    splits never share a problem, whatever the seed or size."""
    digest = hashlib.sha256(problem.text.encode()).digest()
    return digest[0] % TEST_SHARE == 0


def problems(split: str, count: int, *, seed: int = 0) -> list[Problem]:
    """`count` distinct problems of `split` ("train" or "test"), the same for the same seed."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; use train or test")
    rng = random.Random(f"rlkd-toy-arithmetic-{seed}")
    seen: set[str] = set()
    out: list[Problem] = []
    while len(out) < count:
        problem = random_problem(rng)
        if problem.text in seen or is_test(problem) != (split == "test"):
            continue
        seen.add(problem.text)
        out.append(problem)
    return out


def record(problem: Problem) -> dict[str, object]:
    """One dataset row: the columns the recipe reads (problem, answer, teacher_reasoning) and
    how many valid orders the problem has."""
    return {
        "problem": problem.text,
        "answer": str(problem.answer),
        "teacher_reasoning": reasoning(problem, problem.teacher_order),
        "orders": problem.orders,
        "groups": len(problem.groups),
    }


def parse_problem(text: str) -> Problem:
    """The Problem whose text is `text` (the inverse of `Problem.text`)."""
    groups = re.findall(r"\((\d)([-+])(\d)\)", text)
    problem = Problem(tuple(Group(int(a), op, int(b)) for a, op, b in groups))
    if not groups or problem.text != text:
        raise ValueError(f"not a toy arithmetic problem: {text!r}")
    return problem
