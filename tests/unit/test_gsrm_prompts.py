"""GSRM and judge prompts: one builder for serving and SFT, strict yes/no reading."""

from __future__ import annotations

import typing

import pytest

from rlkd.gsrm import parse_steps
from rlkd.gsrm.prompts import (
    PROMPT_VERSION,
    decompose_messages,
    judge_messages,
    parse_verdict,
    sft_record,
)
from rlkd.gsrm.types import DecomposeRequest, Question
from rlkd.spec.job import Domain

DOMAINS: tuple[Domain, ...] = typing.get_args(Domain)


@pytest.mark.parametrize("domain", DOMAINS)
def test_decompose_prompt_per_domain(domain: Domain) -> None:
    request = DecomposeRequest(reasoning="REASONING-TEXT", problem="PROBLEM-TEXT", domain=domain)
    system, user = decompose_messages(request)
    assert (system["role"], user["role"]) == ("system", "user")
    assert "[Meta-reasoning N]" in system["content"]
    # The few-shot example is in the method's format and parses into steps.
    example = user["content"].split("Example decomposition:\n", 1)[1].split("\n\nProblem:")[0]
    assert len(parse_steps(example)) >= 3
    # The request comes last, after the example, so the example's tags end before it.
    assert user["content"].endswith(
        "Problem:\nPROBLEM-TEXT\n\nDecompose this reasoning:\nREASONING-TEXT"
    )


def test_each_domain_has_its_own_example() -> None:
    prompts = {decompose_messages(DecomposeRequest("r", "p", d))[1]["content"] for d in DOMAINS}
    assert len(prompts) == len(DOMAINS)


def test_sft_record_uses_the_serving_prompt() -> None:
    request = DecomposeRequest(reasoning="r", problem="p", domain="code")
    record = sft_record(request, "[Meta-reasoning 1]: m")
    assert record == {
        "prompt": decompose_messages(request),
        "completion": [{"role": "assistant", "content": "[Meta-reasoning 1]: m"}],
    }


def test_prompt_version_is_a_plain_string() -> None:
    assert isinstance(PROMPT_VERSION, str) and PROMPT_VERSION


@pytest.mark.parametrize("kind", ["meta", "subproblem", "answer"])
def test_judge_messages_ask_for_one_word(kind: str) -> None:
    system, user = judge_messages(Question(kind, "TEACHER", "STUDENT"))  # type: ignore[arg-type]
    assert "yes or no" in system["content"] and "yes or no" in user["content"]
    assert user["content"].index("TEACHER") < user["content"].index("STUDENT")


def test_judge_messages_differ_by_kind() -> None:
    texts = {
        judge_messages(Question(k, "a", "b"))[1]["content"]
        for k in ("meta", "subproblem", "answer")
    }
    assert len(texts) == 3


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("yes", True),
        ("Yes.", True),
        ("  YES\n", True),
        ("**Yes**", True),
        ('"yes"', True),
        ("no", False),
        ("No.", False),
        ("NO!", False),
        ("", None),
        ("maybe", None),
        ("yes no", None),
        ("Yes, they are the same.", True),
        ("No, they differ", False),
        ("No. Well, yes.", None),
        ("maybe yes", None),
        ("I don't know", None),
        ("nope", None),
        ("yesterday", None),
    ],
)
def test_parse_verdict(reply: str, expected: bool | None) -> None:
    assert parse_verdict(reply) is expected
