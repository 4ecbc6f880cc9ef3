"""The paper's rewards as TRL reward functions, and the factory that builds them from a spec.

Every function follows TRL's contract, `f(prompts, completions, **columns) -> list[float |
None]`: completions are strings or conversational (lists of message dicts), dataset columns
arrive as keyword lists, and None marks an item the function cannot score (TRL counts it as 0
next to other functions' numbers, see `StructureReward`). `reward_functions(spec,
structure=...)` returns the enabled functions with their weights from `spec.rewards`, in the
order accuracy, format, tag count, structure. Names (`__name__`, which TRL logs): accuracy,
format, tag_count, structure.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from rlkd.errors import BackendError, DatasetError
from rlkd.gsrm.engine import ScoreItem, StructureEngine
from rlkd.gsrm.steps import parse_steps
from rlkd.gsrm.types import Step
from rlkd.spec.job import RLKDJobSpec, domain_of

Completion = str | list[dict[str, Any]]
RewardFunction = Callable[..., list[float | None]]


def completion_text(completion: Completion) -> str:
    """The generated text of a completion: the string itself, or the content of its assistant
    messages."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in completion if m.get("role", "assistant") == "assistant")


def _column(columns: dict[str, Any], name: str, field: str, count: int) -> list[Any]:
    """One dataset column as TRL passes it, or a DatasetError naming the spec field to fix."""
    if name not in columns:
        have = ", ".join(sorted(k for k in columns if isinstance(columns[k], list))) or "none"
        raise DatasetError(
            f"the dataset has no column {name!r} (spec.{field}); columns present: {have}. "
            f"Rename the column or set spec.{field}"
        )
    values = list(columns[name])
    if len(values) != count:
        raise DatasetError(f"column {name!r} has {len(values)} values for {count} completions")
    return values


_LATEX = re.compile(r"\\[A-Za-z]+|[\^_{}]")
"""A LaTeX command, a super- or subscript, or a brace group."""


def accuracy(
    completions: Sequence[Completion], answer: Sequence[str], **_: Any
) -> list[float | None]:
    """1.0 when the completion's final (boxed) answer equals the gold answer by math-verify,
    0.0 when not, None when the gold answer cannot be parsed (for the whole group, which shares
    it). A bare LaTeX gold such as \\sqrt{2} is read as math ($...$) when math-verify finds
    nothing in it as it is; only a gold that looks like LaTeX, since $...$ makes almost any text
    parse (`hello world` as a product of symbols).
    """
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse, verify

    # math-verify's timeouts use signal.alarm, which works in the main thread only.
    main = threading.current_thread() is threading.main_thread()
    timeout = 5 if main else None
    extraction = [
        LatexExtractionConfig(
            normalization_config=NormalizationConfig(units=True),
            boxed_match_priority=0,  # a boxed answer first
            try_extract_without_anchor=False,
        )
    ]
    # A gold answer counts as parsed only as math, not as math-verify's raw-string fallback.
    gold_options: dict[str, Any] = {"fallback_mode": "no_fallback", "parsing_timeout": timeout}
    rewards: list[float | None] = []
    for completion, gold in zip(completions, map(str, answer), strict=True):
        gold_parsed = parse(gold, **gold_options)
        if not gold_parsed and _LATEX.search(gold):
            gold_parsed = parse(f"${gold}$", **gold_options)
        if not gold_parsed:
            rewards.append(None)
            continue
        parsed = parse(
            completion_text(completion),
            extraction_config=extraction,
            extraction_mode="first_match",
            parsing_timeout=timeout,
        )
        rewards.append(float(verify(gold_parsed, parsed, timeout_seconds=timeout)))
    return rewards


_FORMAT = re.compile(r"<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>\s*", re.DOTALL)
_TAGS = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")


def format_reward(completions: Sequence[Completion], **_: Any) -> list[float | None]:
    """1.0 when the completion is `<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>`
    (trailing whitespace allowed), else 0.0."""
    return [1.0 if _FORMAT.fullmatch(completion_text(c)) else 0.0 for c in completions]


format_reward.__name__ = "format"


def tag_count(completions: Sequence[Completion], **_: Any) -> list[float | None]:
    """0.25 for each of the four format tags that appears exactly once (0 to 1)."""
    return [0.25 * sum(completion_text(c).count(tag) == 1 for tag in _TAGS) for c in completions]


GROUP_DROPPED = "group_dropped"


def drop_failed_groups(
    prompts: Sequence[Any], rewards: Sequence[float | None]
) -> list[float | None]:
    """None for every completion whose prompt has a None reward in this batch.

    Groups are found by the prompt itself rather than by position, so their order and size do
    not matter; two groups with an identical prompt are dropped together.
    """
    keys = [repr(prompt) for prompt in prompts]
    failed = {key for key, reward in zip(keys, rewards, strict=True) if reward is None}
    return [None if key in failed else reward for key, reward in zip(keys, rewards, strict=True)]


class StructureReward:
    """The structure reward as a TRL reward function over a `StructureEngine`.

    Items whose reward could not be computed get None, and so does every completion of their
    GRPO group (the completions of the same prompt): TRL sums the weighted rewards with nansum,
    so a lone None would count as 0 against group-mates scored up to n, a large false negative
    advantage. With the whole group None the term is 0 for every member and cancels out of the
    group-relative advantage. The failure reasons are kept, one count per failed completion, and
    the group-mates dropped with it count as `group_dropped`: `last_errors` (the latest call) and
    `errors` (cumulative) feed the learner's logs and the progress document
    (`Progress.reward_errors`); under TRL each call also logs, through its `log_metric`, this
    call's count of every reason seen so far (0 when absent), as `structure_errors/<reason>`.
    """

    __name__ = "structure"

    def __init__(self, engine: StructureEngine, spec: RLKDJobSpec) -> None:
        self.engine = engine
        self.columns = spec.dataset.columns
        self.decompositions = spec.teacher.source == "decompositions"
        self.domain = spec.dataset.domain
        self.errors: Counter[str] = Counter()
        self.last_errors: dict[str, int] = {}
        self.scored = self.failed = 0
        """Completions scored so far, and how many of them got no structure reward."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The loop it last ran on belongs to this process; a copy starts without one.
        return {**self.__dict__, "_loop": None}

    def close(self) -> None:
        """Close the backends' connections, on the loop they were opened on."""
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.engine.aclose(), loop).result()
        else:
            asyncio.run(self.engine.aclose())

    async def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Completion],
        log_metric: Callable[[str, float], None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        # Async, so TRL awaits it on its own event loop: the backends' HTTP sessions live there,
        # and the call runs beside TRL's other async reward functions.
        self._loop = asyncio.get_running_loop()
        result = await self.engine.score(self.items(completions, columns))
        rewards = drop_failed_groups(prompts, result.rewards)
        self.scored += len(rewards)
        self.failed += sum(r is None for r in rewards)
        dropped = sum(r is not None for r in result.rewards) - sum(r is not None for r in rewards)
        self.last_errors = {**result.errors, GROUP_DROPPED: dropped} if dropped else result.errors
        self.errors.update(self.last_errors)
        if log_metric is not None:
            for reason in sorted(self.errors):
                log_metric(f"structure_errors/{reason}", float(self.last_errors.get(reason, 0)))
        return rewards

    def items(self, completions: Sequence[Completion], columns: dict[str, Any]) -> list[ScoreItem]:
        """What the engine scores, read from the columns the spec names."""
        n = len(completions)
        problems = _column(columns, self.columns.problem, "dataset.columns.problem", n)
        if self.decompositions:
            texts = _column(
                columns,
                self.columns.teacher_decomposition,
                "dataset.columns.teacherDecomposition",
                n,
            )
            teachers: list[str | tuple[Step, ...]] = [tuple(parse_steps(t)) for t in texts]
        else:
            teachers = _column(
                columns, self.columns.teacher_reasoning, "dataset.columns.teacherReasoning", n
            )
        if self.columns.domain is None:
            domains = [self.domain] * n
        else:
            column = self.columns.domain
            domains = [
                domain_of(value, column)
                for value in _column(columns, column, "dataset.columns.domain", n)
            ]
        return [
            ScoreItem(completion_text(c), teacher, problem, domain)
            for c, teacher, problem, domain in zip(
                completions, teachers, problems, domains, strict=True
            )
        ]


class AccuracyReward:
    """`accuracy` over the answer column the spec names (a class, not a closure, so it pickles
    into DeepSpeed's and the data loaders' worker copies)."""

    __name__ = "accuracy"

    def __init__(self, answer_column: str) -> None:
        self.answer_column = answer_column

    def __call__(self, completions: Sequence[Completion], **columns: Any) -> list[float | None]:
        gold = _column(columns, self.answer_column, "dataset.columns.answer", len(completions))
        return accuracy(completions, gold)


def reward_functions(
    spec: RLKDJobSpec, *, structure: StructureEngine | None
) -> tuple[list[RewardFunction], list[float]]:
    """The reward functions `spec.rewards` enables (weight > 0) and their weights, for
    GRPOTrainer(reward_funcs=...) and GRPOConfig(reward_weights=...)."""
    weights = spec.rewards
    enabled: list[tuple[RewardFunction, float]] = [
        (AccuracyReward(spec.dataset.columns.answer), weights.accuracy),
        (format_reward, weights.format),
        (tag_count, weights.tag_count),
    ]
    if weights.structure > 0:
        if structure is None:
            raise BackendError(
                f"rewards.structure is {weights.structure} but no StructureEngine was given; "
                "build one from spec.gsrm and spec.judge, or set rewards.structure to 0"
            )
        enabled.append((StructureReward(structure, spec), weights.structure))
    enabled = [(function, weight) for function, weight in enabled if weight > 0]
    return [function for function, _ in enabled], [weight for _, weight in enabled]
