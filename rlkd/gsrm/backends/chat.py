"""A Decomposer and a Judge over any chat model. The prompts, the token budgets and the reading
of replies live here once; a transport (openai over HTTP, transformers in process) only turns
conversations into replies, whole or as they are generated, and reports what went wrong as a
`Failure` instead of raising."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Protocol

from rlkd.gsrm.prompts import decompose_messages, judge_messages, parse_verdict
from rlkd.gsrm.steps import StepParser, parse_steps
from rlkd.gsrm.types import DecomposeRequest, Decomposition, Failure, Question, StepStream, Verdict

Messages = list[dict[str, str]]

JUDGE_MAX_TOKENS = 2
"""The judge answers one word; two tokens leave room for a tokenizer that splits it."""


@dataclass(frozen=True)
class Reply:
    """What a chat model said, greedily decoded."""

    text: str
    truncated: bool = False
    """Generation stopped at the token budget, not at the end of the answer."""


ReplyStream = AsyncGenerator[Reply | Failure, None]
"""A reply as it is generated: its text in pieces (a piece's `truncated` is set on the last one
only, when generation stopped at the budget), or a `Failure` and nothing after it. The stream
ends when the reply does; closing it early stops the generation."""


class ChatModel(Protocol):
    """Conversations -> replies, in order, one per conversation; an infrastructure problem is a
    `Failure` in that conversation's place, never an exception. Greedy unless `temperature` > 0
    (a teacher sampling its reasoning paths)."""

    async def chat(
        self, conversations: Sequence[Messages], max_tokens: int, *, temperature: float = 0.0
    ) -> list[Reply | Failure]: ...

    def stream(self, conversations: Sequence[Messages], max_tokens: int) -> list[ReplyStream]:
        """The same replies as `chat`, each as it is generated."""
        ...


async def collect(stream: ReplyStream) -> Reply | Failure:
    """A streamed reply, whole."""
    pieces: list[str] = []
    truncated = False
    async with contextlib.aclosing(stream):
        async for piece in stream:
            if isinstance(piece, Failure):
                return piece
            pieces.append(piece.text)
            truncated = piece.truncated
    return Reply("".join(pieces), truncated)


class ChatDecomposer:
    """The GSRM as a chat model, decoding greedily within `max_tokens`.

    A decomposition cut at the budget counts as Failure("token_limit") instead of being parsed:
    its last step is cut mid-sentence and its later steps are missing, and a teacher's cut
    decomposition would be cached as if it were whole. Raise `request.maxTokens` if it shows up.
    """

    def __init__(self, model: ChatModel, model_id: str, max_tokens: int) -> None:
        self.model = model
        self.model_id = model_id
        self.max_tokens = max_tokens

    async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
        replies = await self.model.chat([decompose_messages(r) for r in requests], self.max_tokens)
        return [self._steps(reply) for reply in replies]

    def stream(self, requests: Sequence[DecomposeRequest]) -> list[StepStream]:
        """Each decomposition as the GSRM writes it: a `Draft` whenever a part is final, then the
        whole one; a reply cut at the budget ends as Failure("token_limit"), as in `decompose`."""
        streams = self.model.stream([decompose_messages(r) for r in requests], self.max_tokens)
        return [self._drafts(stream) for stream in streams]

    def _steps(self, reply: Reply | Failure) -> Decomposition:
        if isinstance(reply, Failure):
            return reply
        if reply.truncated:
            return self._token_limit()
        return parse_steps(reply.text)

    async def _drafts(self, pieces: ReplyStream) -> StepStream:
        parser = StepParser()
        async with contextlib.aclosing(pieces):
            async for piece in pieces:
                if isinstance(piece, Failure):
                    yield piece
                    return
                if piece.truncated:
                    yield self._token_limit()
                    return
                final = parser.final
                parser.feed(piece.text)
                if parser.final > final:
                    yield parser.draft()
        yield parser.finish()

    def _token_limit(self) -> Failure:
        return Failure("token_limit", f"decomposition cut at {self.max_tokens} tokens")


class ChatJudge:
    """The judge as a chat model: at most `JUDGE_MAX_TOKENS` tokens, greedy, one explicit
    yes/no; a reply that is neither counts as Failure("unparseable_reply")."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def judge(self, questions: Sequence[Question]) -> list[Verdict]:
        replies = await self.model.chat([judge_messages(q) for q in questions], JUDGE_MAX_TOKENS)
        return [_verdict(reply) for reply in replies]


def _verdict(reply: Reply | Failure) -> Verdict:
    if isinstance(reply, Failure):
        return reply
    verdict = parse_verdict(reply.text)
    if verdict is None:
        return Failure("unparseable_reply", repr(reply.text[:80]))
    return verdict
