"""The openai backend against a real HTTP server on 127.0.0.1 (tests/openai_stub.py) that answers
as scripted: replies read as steps and verdicts, token budgets, retries, and every failure
counted by reason instead of raised. The same backend against a real vLLM: tests/e2e."""

from __future__ import annotations

import asyncio
import itertools
import socket

import pytest

from rlkd.gsrm.backends.chat import JUDGE_MAX_TOKENS, ChatDecomposer, ChatJudge
from rlkd.gsrm.backends.openai import OpenAIChat
from rlkd.gsrm.steps import format_steps
from rlkd.gsrm.types import DecomposeRequest, Failure, Question, Step
from rlkd.spec.job import RequestSettings
from tests.openai_stub import OpenAIStub, StubReply

STEPS = [Step("Name the unknown.", "What is x?", "5"), Step("Use it.", "What is 2x?", "10")]


def settings(**overrides: float) -> RequestSettings:
    return RequestSettings(**{"max_tokens": 200, "max_retries": 2, **overrides})


def chat_model(stub: OpenAIStub, **overrides: float) -> OpenAIChat:
    return OpenAIChat(stub.url, "gsrm", settings(**overrides), backoff_seconds=0.01)


def scripted(*replies: StubReply) -> OpenAIStub:
    """A stub that answers with `replies` in turn, repeating the last one."""
    queue = itertools.chain(replies, itertools.repeat(replies[-1]))
    return OpenAIStub(lambda _prompt: next(queue))


async def test_judge_reads_one_word_and_counts_other_replies() -> None:
    answers = {"same-a": "Yes", "same-b": "no.", "same-c": "maybe so"}
    stub = OpenAIStub(lambda p: StubReply(next(v for k, v in answers.items() if k in p)))
    with stub:
        judge = ChatJudge(chat_model(stub))
        questions = [Question("meta", k, k) for k in answers]
        verdicts = await judge.judge(questions)

    assert verdicts[:2] == [True, False]
    assert isinstance(verdicts[2], Failure)
    assert verdicts[2].reason == "unparseable_reply"
    assert {(r["max_tokens"], r["temperature"], r["model"]) for r in stub.requests} == {
        (JUDGE_MAX_TOKENS, 0, "gsrm")
    }


async def test_decomposer_parses_steps_and_refuses_a_reply_cut_at_the_budget() -> None:
    text = format_steps(STEPS)
    stub = OpenAIStub(lambda p: StubReply(text if "short" in p else text * 20))
    with stub:
        decomposer = ChatDecomposer(chat_model(stub), "gsrm-model", max_tokens=100)
        results = await decomposer.decompose(
            [DecomposeRequest("short reasoning"), DecomposeRequest("long reasoning")]
        )

    assert results[0] == STEPS
    assert results[1] == Failure("token_limit", "decomposition cut at 100 tokens")
    assert [r["max_tokens"] for r in stub.requests] == [100, 100]


async def test_retries_server_errors_and_rate_limits_then_succeeds() -> None:
    with scripted(StubReply(status=503), StubReply(status=429), StubReply("yes")) as stub:
        verdicts = await ChatJudge(chat_model(stub, max_retries=2)).judge(
            [Question("meta", "a", "b")]
        )
    assert verdicts == [True]
    assert len(stub.requests) == 3


@pytest.mark.parametrize(
    ("reply", "reason", "attempts"),
    [
        (StubReply(status=500), "server_error", 3),
        (StubReply(status=429), "rate_limited", 3),
        (StubReply(status=400, body='{"error": "prompt too long"}'), "bad_request", 1),
        (StubReply(status=404), "bad_request", 1),
        (StubReply(body="not json"), "bad_response", 1),
        (StubReply(body='{"choices": []}'), "bad_response", 1),
        (StubReply(body=b'{"choices": "\xff\xfe"}'), "bad_response", 1),  # not UTF-8
        (StubReply("yes", delay=2.0), "timeout", 3),
    ],
)
async def test_failures_are_counted_by_reason_after_the_retries_they_deserve(
    reply: StubReply, reason: str, attempts: int
) -> None:
    with scripted(reply) as stub:
        model = chat_model(stub, max_retries=2, timeout_seconds=0.2)
        [verdict] = await ChatJudge(model).judge([Question("answer", "5", "5")])
    assert isinstance(verdict, Failure)
    assert verdict.reason == reason
    assert len(stub.requests) == attempts


@pytest.mark.parametrize(
    ("headers", "status", "asked"),
    [
        ({"Retry-After": "2.5"}, 429, 2.5),
        ({"Retry-After": "0"}, 429, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 429, None),  # a date: backoff
        ({"Retry-After": "-1"}, 429, None),
        ({}, 429, None),
        ({"Retry-After": "2"}, 503, None),
    ],
)
async def test_a_rate_limit_retries_after_the_wait_the_server_asks_for(
    monkeypatch: pytest.MonkeyPatch, headers: dict, status: int, asked: float | None
) -> None:
    waits: list[float | None] = []

    def backoff(attempt: int, retry_after: float | None = None) -> float:
        waits.append(retry_after)
        return 0.0

    with scripted(StubReply(status=status, headers=headers), StubReply("yes")) as stub:
        model = chat_model(stub, max_retries=1)
        monkeypatch.setattr(model, "_backoff", backoff)
        verdicts = await ChatJudge(model).judge([Question("meta", "a", "b")])
    assert verdicts == [True]
    assert waits == [asked]


@pytest.mark.parametrize(("retry_after", "wait"), [(0.0, 0.0), (2.5, 2.5), (1000.0, 30.0)])
def test_the_wait_a_server_asks_for_is_kept_up_to_the_cap(retry_after: float, wait: float) -> None:
    model = OpenAIChat("http://127.0.0.1:1/v1", "m", settings(), max_backoff_seconds=30.0)
    assert model._backoff(3, retry_after) == wait


async def test_a_server_that_is_not_there_is_a_connection_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        model = OpenAIChat(f"http://127.0.0.1:{port}/v1", "m", settings(), backoff_seconds=0.01)
        results = await ChatDecomposer(model, "m", 100).decompose([DecomposeRequest("r")] * 3)
    assert [r.reason for r in results if isinstance(r, Failure)] == ["connection"] * 3


async def test_one_failing_item_does_not_spoil_its_batch() -> None:
    stub = OpenAIStub(lambda p: StubReply(status=400) if "bad" in p else StubReply("no"))
    with stub:
        questions = [Question("meta", t, t) for t in ("good-1", "bad", "good-2")]
        verdicts = await ChatJudge(chat_model(stub)).judge(questions)
    assert verdicts[0] is False
    assert verdicts[2] is False
    assert isinstance(verdicts[1], Failure)
    assert verdicts[1].reason == "bad_request"


async def test_requests_in_flight_never_exceed_max_concurrency() -> None:
    with OpenAIStub(lambda _p: StubReply("yes", delay=0.05)) as stub:
        judge = ChatJudge(chat_model(stub, max_concurrency=3))
        verdicts = await judge.judge([Question("meta", str(i), str(i)) for i in range(12)])
    assert verdicts == [True] * 12
    assert stub.max_in_flight == 3


def test_a_backend_serves_callers_on_successive_event_loops() -> None:
    with OpenAIStub(lambda _p: StubReply("yes")) as stub:
        judge = ChatJudge(chat_model(stub))
        for _ in range(2):
            assert asyncio.run(judge.judge([Question("meta", "a", "a")])) == [True]


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_grows_exponentially_up_to_the_cap_with_jitter(attempt: int) -> None:
    model = OpenAIChat("http://127.0.0.1:1/v1", "m", settings(), backoff_seconds=0.5)
    base = min(model.max_backoff_seconds, 0.5 * 2 ** (attempt - 1))
    assert all(0.5 * base <= model._backoff(attempt) < 1.5 * base for _ in range(50))
