"""The openai backend: any OpenAI-compatible server (vLLM) over async HTTP (aiohttp).

One chat request per conversation, all in flight at once up to `max_concurrency`: vLLM batches
concurrent requests continuously on the server, so they cost about what one request with a list
of prompts costs (8-30% more on a 2-core CPU box: docs/reward-engine-benchmark.md), while each
conversation keeps its own retries and its own error, and the server applies the model's chat
template. aiohttp, not httpx: at 64 connections httpx's client spent 11-17 ms of CPU per
request, aiohttp ~0.5 ms.

A connection error, a timeout, a 429 or a 5xx is retried `max_retries` times with exponential
backoff and jitter (after a 429, the server's Retry-After in seconds when it sends one; both
capped at `max_backoff_seconds`), then returned as a `Failure`; any other 4xx (a prompt longer
than the model's context, an unknown model name) is returned at once as Failure("bad_request"),
and a body that does not decode or is not a completion as Failure("bad_response").

`stream` asks the server to stream (`"stream": true`; server-sent events, one per decoded
piece) and hands out the text as it comes. Closing a stream closes its connection, and vLLM
aborts a request whose client is gone, which frees its batch slot. A stream that breaks mid-way
is retried like any request; the retry decodes greedily from the start again, so the text
already handed out comes again and is skipped. A retry that writes something else instead (a
server that is not deterministic) ends the stream as Failure("stream_diverged").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from rlkd.gsrm.backends.chat import Messages, Reply, ReplyStream
from rlkd.gsrm.types import Failure
from rlkd.spec.job import RequestSettings

RETRIED = frozenset({"connection", "timeout", "rate_limited", "server_error"})
DETAIL_CHARS = 300


class OpenAIChat:
    """A `ChatModel` at `base_url` (…/v1) serving `model`, greedy (temperature 0).

    The HTTP session and the concurrency gate belong to the event loop that uses them (aiohttp
    binds a session to its loop); a caller that changes loops gets a fresh pair per loop.

    `api_key` (a hosted API) goes in every request's Authorization header and nowhere else: not
    in the body, not in a `Failure`, not in the object's repr.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        settings: RequestSettings,
        *,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.settings = settings
        self.extra_body = dict(extra_body or {})
        """More fields for every request, such as vLLM's `chat_template_kwargs` or
        `structured_outputs`."""
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._gate: asyncio.Semaphore | None = None

    async def chat(
        self, conversations: Sequence[Messages], max_tokens: int, *, temperature: float = 0.0
    ) -> list[Reply | Failure]:
        requests = (self._request(c, max_tokens, temperature) for c in conversations)
        return list(await asyncio.gather(*requests))

    def stream(self, conversations: Sequence[Messages], max_tokens: int) -> list[ReplyStream]:
        """One streamed request per conversation, sent when its stream is first read."""
        return [self._stream(c, max_tokens) for c in conversations]

    async def aclose(self) -> None:
        """Close the current loop's connections."""
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._loop = self._session = self._gate = None

    def _body(
        self, messages: Messages, max_tokens: int, temperature: float = 0.0
    ) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            **self.extra_body,
        }

    async def _request(
        self, messages: Messages, max_tokens: int, temperature: float = 0.0
    ) -> Reply | Failure:
        session, gate = self._connect()
        body = self._body(messages, max_tokens, temperature)
        wait: float | None = None
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt, wait))
            async with gate:
                outcome, wait = await self._attempt(session, body)
            if not (isinstance(outcome, Failure) and outcome.reason in RETRIED):
                break
        return outcome

    async def _stream(self, messages: Messages, max_tokens: int) -> ReplyStream:
        session, gate = self._connect()
        body = self._body(messages, max_tokens) | {"stream": True}
        sent = ""  # the text handed out so far, over all attempts
        wait: float | None = None
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt, wait))
            received = ""  # this attempt's text
            async with gate, contextlib.aclosing(self._stream_attempt(session, body)) as events:
                async for event in events:
                    if isinstance(event, tuple):
                        outcome, wait = event
                        break
                    start = len(received)
                    received += event.text
                    overlap = min(len(sent), len(received))
                    if received[start:overlap] != sent[start:overlap]:
                        yield _diverged(len(sent))
                        return
                    fresh = received[max(start, len(sent)) :]
                    if fresh or event.truncated:
                        sent += fresh
                        yield Reply(fresh, event.truncated)
                else:
                    if len(received) < len(sent):
                        yield _diverged(len(sent))
                    return
            if outcome.reason not in RETRIED:
                break
        yield outcome

    async def _stream_attempt(
        self, session: aiohttp.ClientSession, body: dict[str, Any]
    ) -> AsyncGenerator[Reply | tuple[Failure, float | None], None]:
        """One streamed request: the reply's pieces as they come; or, last, why it broke and the
        seconds its reply asks to wait before the next attempt. The time limit covers the whole
        reply; aiohttp's total timeout only ever interrupts a read, never the reader between
        pieces (it stays out of the caller's way while a piece is handed out)."""
        timeout = self.settings.timeout_seconds
        try:
            async with session.post(
                self.url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                if response.status >= 400:
                    failure = read_reply(response.status, await response.text())
                    assert isinstance(failure, Failure)
                    yield failure, retry_after(response.status, response.headers)
                    return
                finished = False
                async for line in response.content:
                    data = sse_data(line)
                    if data == "[DONE]":
                        return
                    chunk = read_chunk(data) if data is not None else None
                    if isinstance(chunk, Failure):
                        yield chunk, None
                        return
                    if chunk is not None:
                        text, finish = chunk
                        finished = finish is not None
                        if text or finished:
                            yield Reply(text, truncated=finish == "length")
                if not finished:
                    yield Failure("connection", "the stream ended before the reply"), None
        except TimeoutError:
            yield Failure("timeout", f"no whole reply within {timeout:g} s"), None
        except aiohttp.ClientError as error:
            yield Failure("connection", f"{type(error).__name__}: {error}"), None
        except (UnicodeError, HttpProcessingError) as error:  # not UTF-8; a line over 64 KiB
            yield Failure("bad_response", f"{type(error).__name__}: {error}"), None

    def _connect(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._session is None or self._gate is None or self._loop is not loop:
            n = self.settings.max_concurrency
            # The per-attempt deadline in _attempt is the timeout; aiohttp's own would cut at 300 s.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=n),
                timeout=aiohttp.ClientTimeout(total=None),
                headers=self._headers,
            )
            self._gate = asyncio.Semaphore(n)
            self._loop = loop
        return self._session, self._gate

    def _backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait the server asked for, when it did; else exponential in the attempt times a
        jitter in [0.5, 1.5), so that requests that failed together do not come back together.
        Either is capped at `max_backoff_seconds`."""
        if retry_after is not None:
            return min(self.max_backoff_seconds, retry_after)
        base = min(self.max_backoff_seconds, self.backoff_seconds * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.5)

    async def _attempt(
        self, session: aiohttp.ClientSession, body: dict[str, Any]
    ) -> tuple[Reply | Failure, float | None]:
        """One request's outcome, and the seconds its reply asks to wait before the next."""
        timeout = self.settings.timeout_seconds
        try:
            async with asyncio.timeout(timeout), session.post(self.url, json=body) as response:
                wait = retry_after(response.status, response.headers)
                return read_reply(response.status, await response.text()), wait
        except TimeoutError:
            return Failure("timeout", f"no reply within {timeout:g} s"), None
        except aiohttp.ClientError as error:
            return Failure("connection", f"{type(error).__name__}: {error}"), None
        except UnicodeError as error:  # a body not in the encoding it declares
            return Failure("bad_response", f"{type(error).__name__}: {error}"), None


def retry_after(status: int, headers: Mapping[str, str]) -> float | None:
    """The seconds a 429's Retry-After header asks for; None for other replies and for a
    header that is not a number of seconds (an HTTP date), which leave the wait to the backoff."""
    if status != 429:
        return None
    try:
        seconds = float(headers.get("Retry-After", ""))
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def read_reply(status: int, text: str) -> Reply | Failure:
    """A chat completion's first choice, or why there is none."""
    if status >= 400:
        reason = (
            "rate_limited" if status == 429 else "server_error" if status >= 500 else "bad_request"
        )
        return Failure(reason, f"HTTP {status}: {text[:DETAIL_CHARS]}")
    try:
        choice = json.loads(text)["choices"][0]
        reply = choice["message"]["content"] or ""
        truncated = choice.get("finish_reason") == "length"
    except (ValueError, LookupError, TypeError, AttributeError) as error:
        return Failure("bad_response", f"{type(error).__name__}: {text[:DETAIL_CHARS]}")
    return Reply(reply, truncated=truncated)


def sse_data(line: bytes) -> str | None:
    """The data of one line of server-sent events; None for the other lines (blank lines between
    events, comments)."""
    text = line.decode("utf-8").rstrip("\r\n")
    return text.removeprefix("data:").lstrip(" ") if text.startswith("data:") else None


def read_chunk(data: str) -> tuple[str, str | None] | Failure | None:
    """A streamed chat completion chunk's new text and finish reason (None while it goes on);
    None for a chunk without a choice (usage), a Failure for an error event or a body that is
    not a chunk."""
    try:
        chunk = json.loads(data)
        if "error" in chunk:
            return Failure("server_error", f"error event: {data[:DETAIL_CHARS]}")
        if not chunk["choices"]:
            return None
        choice = chunk["choices"][0]
        return choice["delta"].get("content") or "", choice.get("finish_reason")
    except (ValueError, LookupError, TypeError, AttributeError) as error:
        return Failure("bad_response", f"{type(error).__name__}: {data[:DETAIL_CHARS]}")


def _diverged(length: int) -> Failure:
    return Failure(
        "stream_diverged",
        f"a retried stream did not repeat the {length} characters already handed out",
    )
