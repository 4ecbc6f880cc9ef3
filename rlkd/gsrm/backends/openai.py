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
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from rlkd.gsrm.backends.chat import Messages, Reply
from rlkd.gsrm.types import Failure
from rlkd.spec.job import RequestSettings

RETRIED = frozenset({"connection", "timeout", "rate_limited", "server_error"})
DETAIL_CHARS = 300


class OpenAIChat:
    """A `ChatModel` at `base_url` (…/v1) serving `model`, greedy (temperature 0).

    The HTTP session and the concurrency gate belong to the event loop that uses them (aiohttp
    binds a session to its loop); a caller that changes loops gets a fresh pair per loop.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        settings: RequestSettings,
        *,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.settings = settings
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._gate: asyncio.Semaphore | None = None

    async def chat(
        self, conversations: Sequence[Messages], max_tokens: int, *, temperature: float = 0.0
    ) -> list[Reply | Failure]:
        requests = (self._request(c, max_tokens, temperature) for c in conversations)
        return list(await asyncio.gather(*requests))

    async def aclose(self) -> None:
        """Close the current loop's connections."""
        if self._session is not None and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._loop = self._session = self._gate = None

    async def _request(
        self, messages: Messages, max_tokens: int, temperature: float = 0.0
    ) -> Reply | Failure:
        session, gate = self._connect()
        body = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        wait: float | None = None
        for attempt in range(self.settings.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt, wait))
            async with gate:
                outcome, wait = await self._attempt(session, body)
            if not (isinstance(outcome, Failure) and outcome.reason in RETRIED):
                break
        return outcome

    def _connect(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._session is None or self._gate is None or self._loop is not loop:
            n = self.settings.max_concurrency
            # The per-attempt deadline in _attempt is the timeout; aiohttp's own would cut at 300 s.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=n), timeout=aiohttp.ClientTimeout(total=None)
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
