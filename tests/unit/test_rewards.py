"""The recipe's rewards under TRL's contract, and the factory that builds them from a spec."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rlkd.errors import BackendError, DatasetError
from rlkd.gsrm.backends.rule import RuleDecomposer, RuleJudge
from rlkd.gsrm.engine import StructureEngine
from rlkd.gsrm.types import Failure
from rlkd.rewards import (
    StructureReward,
    accuracy,
    completion_text,
    drop_failed_groups,
    format_reward,
    reward_functions,
    tag_count,
)
from rlkd.spec import RLKDJobSpec

GOOD = "<think>\nreason\n</think>\n<answer>\n\\boxed{42}\n</answer>"


def spec(**fields: Any) -> RLKDJobSpec:
    base: dict[str, Any] = {
        "student": {"model": "org/student"},
        "dataset": {"uri": "s3://data/train.jsonl"},
        "gsrm": {"backend": "rule"},
        "judge": {"backend": "rule"},
    }
    return RLKDJobSpec.model_validate({**base, **fields})


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("plain", "plain"),
        (chat("one"), "one"),
        (
            [
                {"role": "assistant", "content": "a"},
                {"role": "tool", "content": "t"},
                {"role": "assistant", "content": "b"},
            ],
            "ab",
        ),
    ],
)
def test_completion_text(completion: Any, expected: str) -> None:
    assert completion_text(completion) == expected


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (GOOD, "42", 1.0),
        (GOOD, "$42$", 1.0),
        (GOOD, "41", 0.0),
        (chat(GOOD), "42", 1.0),
        ("<answer>\\boxed{\\frac{1}{2}}</answer>", "0.5", 1.0),
        ("<answer>\\boxed{\\sqrt{2}}</answer>", "\\sqrt{2}", 1.0),  # bare LaTeX gold
        ("<think>\\boxed{3}</think><answer>\\boxed{42}</answer>", "42", 1.0),
        ("the answer is 42, no box", "42", 0.0),
        (GOOD, "", None),
        (GOOD, "no math here ???", None),
        # Retried as $...$ only when it looks like LaTeX: as math, any text is a product.
        (GOOD, "hello world", None),
        ("<answer>\\boxed{hello world}</answer>", "hello world", None),
        (GOOD, "forty two", None),
        ("<answer>\\boxed{x^2}</answer>", "x^2", 1.0),
        ("<answer>\\boxed{a_1}</answer>", "a_1", 1.0),
        ("<answer>\\boxed{\\{1,2\\}}</answer>", "\\{1,2\\}", 1.0),
        ("<answer>\\boxed{\\pi}</answer>", "\\pi", 1.0),
    ],
)
def test_accuracy(completion: Any, gold: str, expected: float | None) -> None:
    assert accuracy([completion], [gold]) == [expected]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        (GOOD + "\n", 1.0),
        (chat(GOOD), 1.0),
        ("<think>\nr\n</think><answer>\na\n</answer>", 0.0),
        ("<think>r</think>\n<answer>\na\n</answer>", 0.0),
        ("prefix " + GOOD, 0.0),
        (GOOD + " suffix", 0.0),
        ("<think>\nr\n</think>\n", 0.0),
    ],
)
def test_format(completion: Any, expected: float) -> None:
    assert format_reward([completion]) == [expected]


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (GOOD, 1.0),
        ("", 0.0),
        ("<think>\nr\n</think>\n", 0.5),
        ("<think>\n<think>\nr\n</think>\n<answer>\na\n</answer>", 0.75),
        (chat("<think>\nr"), 0.25),
    ],
)
def test_tag_count(completion: Any, expected: float) -> None:
    assert tag_count([completion]) == [expected]


def engine() -> StructureEngine:
    return StructureEngine(RuleDecomposer(), RuleJudge())


def names(functions: list) -> list[str]:
    return [f.__name__ for f in functions]


def test_factory_defaults_are_the_papers_weights() -> None:
    functions, weights = reward_functions(spec(), structure=engine())
    assert names(functions) == ["accuracy", "format", "tag_count", "structure"]
    assert weights == [15.0, 10.0, 10.0, 15.0]


def test_factory_leaves_out_weight_zero() -> None:
    functions, weights = reward_functions(
        spec(rewards={"structure": 0, "format": 0}), structure=None
    )
    assert names(functions) == ["accuracy", "tag_count"]
    assert weights == [15.0, 10.0]


def test_structure_weight_without_engine_is_an_error() -> None:
    with pytest.raises(BackendError, match="no StructureEngine was given"):
        reward_functions(spec(), structure=None)


def test_accuracy_reads_the_spec_answer_column() -> None:
    functions, _ = reward_functions(
        spec(
            dataset={"uri": "s3://data/t.jsonl", "columns": {"answer": "solution"}},
            rewards={"structure": 0},
        ),
        structure=None,
    )
    assert functions[0](prompts=["p"], completions=[GOOD], solution=["42"]) == [1.0]
    with pytest.raises(DatasetError, match=r"no column 'solution' \(spec.dataset.columns.answer\)"):
        functions[0](prompts=["p"], completions=[GOOD], answer=["42"])


TEACHER = "[Meta-reasoning 1]: m1\n[Sub-problem 1]: q1\n[Answer 1]: 4\n[Meta-reasoning 2]: m2"
STUDENT = "<think>\n[Meta-reasoning 1]: m1\n[Sub-problem 1]: q1\n[Answer 1]: 4.0\n</think>\n"


def scored(reward: Any, **kwargs: Any) -> list[float | None]:
    """Call an async reward function as TRL does: awaited on an event loop."""
    return asyncio.run(reward(**kwargs))


def structure_function(**fields: Any) -> StructureReward:
    functions, _ = reward_functions(spec(**fields), structure=engine())
    assert isinstance(functions[-1], StructureReward)
    return functions[-1]


def test_structure_reads_the_teacher_reasoning_column() -> None:
    reward = structure_function()
    out = scored(
        reward,
        prompts=["p", "p"],
        completions=[STUDENT, chat("prose")],
        problem=["x", "x"],
        teacher_reasoning=[TEACHER, TEACHER],
        answer=["4", "4"],
    )
    assert out == [1.0, 0.0]


def test_structure_reads_precomputed_decompositions() -> None:
    reward = structure_function(
        teacher={"source": "decompositions"},
        dataset={"uri": "s3://data/t.jsonl", "columns": {"teacherDecomposition": "steps"}},
    )
    assert scored(reward, prompts=["p"], completions=[STUDENT], problem=["x"], steps=[TEACHER]) == [
        1.0
    ]


def test_structure_reads_a_domain_column_and_rejects_unknown_domains() -> None:
    reward = structure_function(dataset={"uri": "s3://data/t.jsonl", "columns": {"domain": "dom"}})
    kwargs = {
        "prompts": ["p"],
        "completions": [STUDENT],
        "problem": ["x"],
        "teacher_reasoning": [TEACHER],
    }
    assert scored(reward, **kwargs, dom=["code"]) == [1.0]
    with pytest.raises(DatasetError, match="holds the domain 'chemistry'"):
        scored(reward, **kwargs, dom=["chemistry"])


def test_structure_missing_teacher_column_names_the_field() -> None:
    with pytest.raises(DatasetError, match=r"spec\.dataset\.columns\.teacherReasoning"):
        scored(structure_function(), prompts=["p"], completions=[STUDENT], problem=["x"])


class FlakyJudge:
    """Times out on every answer question."""

    async def judge(self, questions):
        return [Failure("timeout") if q.kind == "answer" else True for q in questions]


def test_structure_errors_are_exposed_and_logged() -> None:
    functions, _ = reward_functions(
        spec(), structure=StructureEngine(RuleDecomposer(), FlakyJudge())
    )
    reward = functions[-1]
    logged: list[tuple[str, float]] = []
    kwargs = {"prompts": ["p", "q"], "problem": ["x"] * 2, "teacher_reasoning": [TEACHER] * 2}

    out = scored(
        reward,
        completions=[STUDENT, "prose"],
        log_metric=lambda k, v: logged.append((k, v)),
        **kwargs,
    )
    assert out == [None, 0.0]  # an infrastructure failure is None, never 0
    assert reward.last_errors == {"timeout": 1}

    out = scored(
        reward, completions=["prose"] * 2, log_metric=lambda k, v: logged.append((k, v)), **kwargs
    )
    assert out == [0.0, 0.0]
    assert reward.last_errors == {}
    assert reward.errors == {"timeout": 1}
    assert logged == [("structure_errors/timeout", 1.0), ("structure_errors/timeout", 0.0)]


def test_structure_failure_drops_its_whole_group() -> None:
    functions, _ = reward_functions(
        spec(), structure=StructureEngine(RuleDecomposer(), FlakyJudge())
    )
    reward = functions[-1]
    logged: list[tuple[str, float]] = []
    prompts = ["p", "p", "p", chat("q"), chat("q"), [{"role": "user", "content": "r"}]]
    out = scored(
        reward,
        prompts=prompts,
        completions=[STUDENT, "prose", "prose", "prose", "prose", STUDENT],
        problem=["x"] * 6,
        teacher_reasoning=[TEACHER] * 6,
        log_metric=lambda k, v: logged.append((k, v)),
    )
    # p: one timeout, its two group-mates dropped; q (conversational) scores; r times out alone.
    assert out == [None, None, None, 0.0, 0.0, None]
    assert reward.last_errors == {"timeout": 2, "group_dropped": 2}
    assert reward.errors == {"timeout": 2, "group_dropped": 2}
    assert logged == [("structure_errors/group_dropped", 2.0), ("structure_errors/timeout", 2.0)]


@pytest.mark.parametrize(
    ("prompts", "rewards", "expected"),
    [
        ([], [], []),
        (["a", "a"], [1.0, 2.0], [1.0, 2.0]),
        (["a", "a", "b", "b"], [1.0, None, 0.0, 3.0], [None, None, 0.0, 3.0]),
        (["a", "b", "a"], [None, 1.0, 2.0], [None, 1.0, None]),  # by prompt, not position
    ],
)
def test_drop_failed_groups(prompts: list, rewards: list, expected: list) -> None:
    assert drop_failed_groups(prompts, rewards) == expected


def test_reward_functions_pickle_for_worker_copies(tmp_path: Any) -> None:
    """DeepSpeed and multiprocessing data loaders copy the reward functions."""
    import pickle

    from rlkd.job_rewards import build_rewards
    from rlkd.store import LocalStore

    rewards = build_rewards(spec(), LocalStore(tmp_path))
    copies = pickle.loads(pickle.dumps(rewards.functions))
    assert (
        names(copies)
        == names(rewards.functions)
        == [
            "accuracy",
            "format",
            "tag_count",
            "structure",
        ]
    )
    assert copies[0](prompts=["p"], completions=[GOOD], answer=["42"]) == [1.0]
    assert scored(
        copies[-1], prompts=["p"], completions=[STUDENT], problem=["x"], teacher_reasoning=[TEACHER]
    ) == [1.0]
    assert rewards.weights == [15.0, 10.0, 10.0, 15.0]


def test_the_factory_builds_the_backends_the_spec_names() -> None:
    from rlkd.job_rewards import build_rewards

    rewards = build_rewards(spec(rewards={"structure": 0}), None)
    assert rewards.structure is None and names(rewards.functions) == [
        "accuracy",
        "format",
        "tag_count",
    ]
    with pytest.raises(BackendError, match="RLKD_GSRM_URL is not set"):
        build_rewards(spec(gsrm={"model": "org/gsrm"}), None, env={})
