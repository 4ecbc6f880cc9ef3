"""A small OpenAI-compatible HTTP server on 127.0.0.1 with scripted replies, a latency model and
counters. The tests drive the openai backend's failure paths against it (a real vLLM serves the
e2e test), and benchmarks/reward_pipeline.py serves all its reward patterns from it.

    with OpenAIStub(lambda prompt: StubReply("yes")) as stub:
        OpenAIChat(stub.url, "m", settings)

A token is a run of non-space characters with the spaces after it: replies are cut at the
request's `max_tokens` in those units (finish_reason "length"), and a reply takes
`per_request + per_token * tokens` seconds, as a server that decodes every sequence of a batch
in parallel would. `/v1/completions` takes a list of prompts and answers when its longest reply
is done. A chat request with `"stream": true` gets server-sent events as vLLM sends them, one
token each at `per_token` intervals after `per_request`; when the client goes away the stub
stops generating, as vLLM aborts the request (`aborted` counts those, and only the tokens
sent count as generated).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

HOST = "127.0.0.1"
TOKEN = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True)
class StubReply:
    """What the stub answers to one prompt."""

    text: str = ""
    status: int = 200
    delay: float = 0.0
    """Seconds to wait before answering, on top of the latency model."""
    body: str | bytes | None = None
    """Sent verbatim (with `status`) instead of a completion: malformed replies."""
    headers: dict[str, str] = field(default_factory=dict)
    """Sent with a reply that is not a completion (Retry-After with a 429)."""
    break_after: int | None = None
    """A streamed reply: drop the connection after sending this many tokens."""


Responder = Callable[[str], StubReply]
"""Prompt -> reply; a chat request's prompt is its messages' contents joined by newlines."""


@dataclass(frozen=True)
class Latency:
    per_request: float = 0.0
    per_token: float = 0.0


class OpenAIStub:
    """The server, run in a thread of its own with its own event loop."""

    def __init__(self, respond: Responder, latency: Latency = Latency()) -> None:
        self.respond = respond
        self.latency = latency
        self.requests: list[dict] = []
        self.authorizations: list[str | None] = []
        """Each chat request's Authorization header (None when it sent none)."""
        self.generated_tokens = 0
        self.tokens_by_model: Counter[str] = Counter()
        """Generated tokens by the requests' model name."""
        self.aborted = 0
        """Streamed replies whose client went away before the end."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def reset_counts(self) -> None:
        self.requests.clear()
        self.authorizations.clear()
        self.tokens_by_model.clear()
        self.generated_tokens = self.max_in_flight = self.aborted = 0

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://{HOST}:{port}/v1"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.authorizations.append(request.headers.get("Authorization"))
        prompt = "\n".join(m["content"] for m in body["messages"])
        if body.get("stream"):
            return await self._stream(request, body, prompt)
        return await self._answer(body, [prompt], chat=True)

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        return await self._answer(body, prompts, chat=False)

    async def _answer(self, body: dict, prompts: list[str], *, chat: bool) -> web.Response:
        self._begin(body)
        try:
            replies = [self.respond(p) for p in prompts]
            cut = [_cut(r.text, body.get("max_tokens")) for r in replies]
            longest = max(len(tokens) for tokens, _ in cut)
            delay = max(r.delay for r in replies)
            await asyncio.sleep(self.latency.per_request + self.latency.per_token * longest + delay)
            failed = _failed(replies)
            if failed is not None:
                return failed
            self._count(body, sum(len(tokens) for tokens, _ in cut))
            return web.json_response(_completion(cut, chat=chat))
        finally:
            self.in_flight -= 1

    async def _stream(self, request: web.Request, body: dict, prompt: str) -> web.StreamResponse:
        self._begin(body)
        try:
            reply = self.respond(prompt)
            tokens, finish = _cut(reply.text, body.get("max_tokens"))
            loop = asyncio.get_running_loop()
            start = loop.time() + self.latency.per_request + reply.delay
            await asyncio.sleep(start - loop.time())
            failed = _failed([reply])
            if failed is not None:
                return failed
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            try:
                await response.write(_event({"role": "assistant", "content": ""}, None))
                for sent, token in enumerate(tokens or [""]):
                    if sent == reply.break_after:
                        assert request.transport is not None
                        request.transport.close()
                        return response
                    # Absolute times: waits that overrun do not add up over a long reply.
                    await asyncio.sleep(start + self.latency.per_token * (sent + 1) - loop.time())
                    last = sent == len(tokens) - 1 or not tokens
                    await response.write(_event({"content": token}, finish if last else None))
                    self._count(body, 1 if token else 0)
                await response.write(b"data: [DONE]\n\n")
            except ConnectionResetError:  # the client went away: vLLM aborts the request
                self.aborted += 1
            return response
        finally:
            self.in_flight -= 1

    def _begin(self, body: dict) -> None:
        self.requests.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _count(self, body: dict, tokens: int) -> None:
        self.generated_tokens += tokens
        self.tokens_by_model[body.get("model", "")] += tokens


def _failed(replies: list[StubReply]) -> web.Response | None:
    """The error response of the first reply that is not a completion, if any."""
    failed = next((r for r in replies if r.status != 200 or r.body is not None), None)
    if failed is None:
        return None
    content = failed.body or "stub error"
    return web.Response(
        status=failed.status,
        body=content if isinstance(content, bytes) else content.encode(),
        headers=failed.headers,
        content_type="application/json",
    )


def _event(delta: dict, finish: str | None) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _cut(text: str, max_tokens: int | None) -> tuple[list[str], str]:
    tokens = TOKEN.findall(text)
    if max_tokens is not None and len(tokens) > max_tokens:
        return tokens[:max_tokens], "length"
    return tokens, "stop"


def _completion(cut: list[tuple[list[str], str]], *, chat: bool) -> dict:
    choices = [
        {"index": i, "finish_reason": finish}
        | (
            {"message": {"role": "assistant", "content": "".join(t)}}
            if chat
            else {"text": "".join(t)}
        )
        for i, (t, finish) in enumerate(cut)
    ]
    tokens = sum(len(t) for t, _ in cut)
    return {"choices": choices, "usage": {"completion_tokens": tokens}}
