"""The openai backend's streamed replies against a real HTTP server on 127.0.0.1
(tests/openai_stub.py, which streams server-sent events as vLLM does and stops generating when
its client goes away): drafts as the steps are written, aborts, retries of a stream that breaks
mid-way, and every failure counted by reason. The same against a real vLLM: tests/e2e."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from rlkd.gsrm.backends.chat import ChatDecomposer, Reply, collect
from rlkd.gsrm.backends.openai import OpenAIChat, read_chunk, sse_data
from rlkd.gsrm.steps import format_steps
from rlkd.gsrm.types import DecomposeRequest, Draft, Failure, Step
from rlkd.spec.job import RequestSettings
from tests.openai_stub import TOKEN, Latency, OpenAIStub, StubReply

STEPS = [Step(f"Why step {n}.", f"What is {n} + {n}?", str(2 * n)) for n in range(1, 7)]
TEXT = format_steps(STEPS)
MESSAGES = [{"role": "user", "content": "decompose"}]


def chat_model(stub: OpenAIStub, **overrides: float) -> OpenAIChat:
    settings = RequestSettings(**{"max_tokens": 400, "max_retries": 2, **overrides})
    return OpenAIChat(stub.url, "gsrm", settings, backoff_seconds=0.01)


def scripted(*replies: StubReply, per_token: float = 0.0) -> OpenAIStub:
    """A stub that answers with `replies` in turn, repeating the last one."""
    queue = itertools.chain(replies, itertools.repeat(replies[-1]))
    return OpenAIStub(lambda _prompt: next(queue), Latency(per_token=per_token))


async def drafts(model: OpenAIChat, max_tokens: int = 400) -> list[Draft | Failure]:
    """One streamed decomposition, read to its end."""
    decomposer = ChatDecomposer(model, "gsrm", max_tokens)
    [stream] = decomposer.stream([DecomposeRequest("some reasoning")])
    results = [draft async for draft in stream]
    await model.aclose()
    return results


async def test_a_streamed_decomposition_grows_part_by_part_and_ends_whole() -> None:
    with scripted(StubReply(TEXT)) as stub:
        results = await drafts(chat_model(stub))
    assert results[-1] == Draft.of(STEPS)
    finals = [d.final for d in results if isinstance(d, Draft)]
    assert finals == sorted(set(finals))  # one draft whenever a part became final
    assert len(finals) == 3 * len(STEPS)  # one per tag, and the whole
    assert stub.requests[0]["stream"] is True
    assert stub.aborted == 0


async def test_a_streamed_reply_is_the_reply_chat_gives() -> None:
    with scripted(StubReply(TEXT)) as stub:
        model = chat_model(stub)
        [whole] = await model.chat([MESSAGES], 400)
        [streamed] = [await collect(s) for s in model.stream([MESSAGES], 400)]
        await model.aclose()
    assert streamed == whole == Reply(TEXT)


async def test_closing_a_stream_stops_the_generation() -> None:
    with scripted(StubReply(TEXT), per_token=0.005) as stub:
        model = chat_model(stub)
        [stream] = ChatDecomposer(model, "gsrm", 400).stream([DecomposeRequest("reasoning")])
        first = await anext(stream)
        await stream.aclose()
        deadline = time.monotonic() + 10
        while not stub.aborted and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        generated = stub.generated_tokens
        await asyncio.sleep(0.1)
        assert stub.generated_tokens == generated  # nothing more after the abort
        await model.aclose()
    assert isinstance(first, Draft) and first.final == 1
    assert stub.aborted == 1
    assert generated < len(TOKEN.findall(TEXT)) // 2


async def test_a_reply_cut_at_the_budget_ends_as_a_token_limit() -> None:
    with scripted(StubReply(TEXT)) as stub:
        results = await drafts(chat_model(stub), max_tokens=20)
    assert results[-1] == Failure("token_limit", "decomposition cut at 20 tokens")
    assert all(isinstance(d, Draft) for d in results[:-1])


async def test_a_stream_that_breaks_mid_way_is_retried_without_repeating_itself() -> None:
    with scripted(StubReply(TEXT, break_after=25), StubReply(TEXT)) as stub:
        model = chat_model(stub)
        pieces = [p async for p in model.stream([MESSAGES], 400)[0]]
        await model.aclose()
    assert len(stub.requests) == 2
    assert all(isinstance(p, Reply) for p in pieces)
    assert "".join(p.text for p in pieces if isinstance(p, Reply)) == TEXT


async def test_a_broken_stream_gives_the_same_steps_after_its_retry() -> None:
    with scripted(StubReply(TEXT, break_after=40), StubReply(TEXT)) as stub:
        results = await drafts(chat_model(stub))
    assert results[-1] == Draft.of(STEPS)


async def test_a_retry_that_writes_something_else_is_a_counted_divergence() -> None:
    other = TEXT.replace("Why step 2", "Why not step 2")
    with scripted(StubReply(TEXT, break_after=25), StubReply(other)) as stub:
        results = await drafts(chat_model(stub))
    failure = results[-1]
    assert isinstance(failure, Failure) and failure.reason == "stream_diverged"
    assert len(stub.requests) == 2


async def test_a_retry_that_ends_short_of_what_was_sent_is_a_divergence() -> None:
    with scripted(StubReply(TEXT, break_after=25), StubReply(TEXT[:30])) as stub:
        results = await drafts(chat_model(stub))
    failure = results[-1]
    assert isinstance(failure, Failure) and failure.reason == "stream_diverged"


@pytest.mark.parametrize(
    ("reply", "reason", "attempts"),
    [
        (StubReply(TEXT, break_after=10), "connection", 3),
        (StubReply(status=503), "server_error", 3),
        (StubReply(status=429), "rate_limited", 3),
        (StubReply(status=400, body='{"error": "prompt too long"}'), "bad_request", 1),
        (StubReply(body=b"data: not json\n\n"), "bad_response", 1),
        (StubReply(body=b'data: {"choices": "\xff"}\n\n'), "bad_response", 1),
        (StubReply(body=b'data: {"error": {"message": "boom"}}\n\n'), "server_error", 3),
        (StubReply(body=b'data: {"choices": []}\n\n'), "connection", 3),  # ends before the reply
        (StubReply(TEXT, delay=2.0), "timeout", 3),
    ],
)
async def test_stream_failures_are_counted_by_reason_after_the_retries_they_deserve(
    reply: StubReply, reason: str, attempts: int
) -> None:
    with scripted(reply) as stub:
        results = await drafts(chat_model(stub, max_retries=2, timeout_seconds=0.3))
    failure = results[-1]
    assert isinstance(failure, Failure)
    assert failure.reason == reason
    assert len(stub.requests) == attempts


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b'data: {"a": 1}\n', '{"a": 1}'),
        (b'data:{"a": 1}\r\n', '{"a": 1}'),
        (b"data: [DONE]\n", "[DONE]"),
        (b"\n", None),
        (b": keep-alive\n", None),
        (b"event: message\n", None),
    ],
)
def test_sse_data(line: bytes, data: str | None) -> None:
    assert sse_data(line) == data


@pytest.mark.parametrize(
    ("data", "chunk"),
    [
        ('{"choices": [{"delta": {"content": "ab"}, "finish_reason": null}]}', ("ab", None)),
        ('{"choices": [{"delta": {"role": "assistant"}, "finish_reason": null}]}', ("", None)),
        ('{"choices": [{"delta": {"content": null}, "finish_reason": "stop"}]}', ("", "stop")),
        ('{"choices": [{"delta": {}, "finish_reason": "length"}]}', ("", "length")),
        ('{"choices": [], "usage": {"completion_tokens": 3}}', None),
    ],
)
def test_read_chunk(data: str, chunk: tuple[str, str | None] | None) -> None:
    assert read_chunk(data) == chunk


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ('{"error": {"message": "engine died"}}', "server_error"),
        ("not json", "bad_response"),
        ('{"choices": [{"finish_reason": null}]}', "bad_response"),
        ('{"choices": "x"}', "bad_response"),
    ],
)
def test_read_chunk_failures(data: str, reason: str) -> None:
    failure = read_chunk(data)
    assert isinstance(failure, Failure) and failure.reason == reason
