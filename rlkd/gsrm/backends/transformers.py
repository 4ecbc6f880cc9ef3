"""The transformers backend: a Hugging Face model inside this process (CPU or GPU).

Conversations go through the model's chat template, are left-padded into batches of
`batch_size` and decoded greedily with `generate`. Generation runs in a worker thread, one batch
at a time, so the event loop that awaits it stays free. A stopping criterion hands each row's new
text to its reader as the tokens come (decoded incrementally, as vLLM does), and stops a row
whose reader closed its stream, so a decomposition whose reward is decided stops early, as a
vLLM request does when its client goes away. A batch that raises (out of memory, a chat template
that rejects a conversation) becomes a `Failure` for each of its conversations, logged, so that
it costs rewards, not the training run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, Sequence
from types import AsyncGeneratorType
from typing import Any, cast

import torch
from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    StoppingCriteria,
    StoppingCriteriaList,
)

from rlkd.gsrm.backends.chat import Messages, Reply, ReplyStream, collect
from rlkd.gsrm.types import Failure

log = logging.getLogger(__name__)
DETAIL_CHARS = 300


class TransformersChat:
    """A `ChatModel` loaded from `model` (a local directory or a hub id)."""

    def __init__(self, model: str, *, batch_size: int, device: str | None = None) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype="auto")
        self.model = loaded.to(self.device)  # type: ignore[arg-type]  # transformers' stub of .to
        self.model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        # Without an end token generation never stops early and every reply reads as truncated.
        if self.model.generation_config.eos_token_id is None:
            self.model.generation_config.eos_token_id = self.tokenizer.eos_token_id
        self._lock = threading.Lock()

    async def chat(
        self, conversations: Sequence[Messages], max_tokens: int, *, temperature: float = 0.0
    ) -> list[Reply | Failure]:
        streams = self.stream(conversations, max_tokens, temperature=temperature)
        return [await collect(stream) for stream in streams]

    def stream(
        self, conversations: Sequence[Messages], max_tokens: int, *, temperature: float = 0.0
    ) -> list[ReplyStream]:
        """The replies as they are generated; generation starts at once."""
        loop = asyncio.get_running_loop()
        rows = [_Row(loop) for _ in conversations]
        readers = [row.read() for row in rows]
        work = loop.run_in_executor(
            None, self._generate, list(conversations), max_tokens, rows, temperature
        )
        for row in rows:
            row.work = work
        return readers

    def _generate(
        self, conversations: list[Messages], max_tokens: int, rows: list[_Row], temperature: float
    ) -> None:
        with self._lock:
            for start in range(0, len(conversations), self.batch_size):
                batch = [
                    (conversation, row)
                    for conversation, row in zip(
                        conversations[start : start + self.batch_size],
                        rows[start : start + self.batch_size],
                        strict=True,
                    )
                    if not row.stopped  # its reader is gone before its batch began
                ]
                if not batch:
                    continue
                try:
                    self._batch(
                        [c for c, _ in batch], [r for _, r in batch], max_tokens, temperature
                    )
                except Exception as error:
                    failure = _failure(error, len(batch))
                    for _, row in batch:
                        row.end(failure)

    @torch.inference_mode()
    def _batch(
        self, conversations: list[Messages], rows: list[_Row], max_tokens: int, temperature: float
    ) -> None:
        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        inputs = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        streamer = _Streamer(
            rows,
            self.tokenizer.backend_tokenizer,
            _eos_ids(self.model.generation_config.eos_token_id),
        )
        self.model.generate(
            **inputs,
            max_new_tokens=max_tokens,
            do_sample=temperature > 0,
            **({"temperature": temperature} if temperature > 0 else {}),
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([streamer]),
        )
        for row in rows:  # the rows that did not reach an end token
            row.end(None if row.stopped else Reply("", truncated=True))


class _Row:
    """One conversation's reply on its way from the generating thread to its reader on the
    event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Reply | Failure | None] = asyncio.Queue()  # None: the end
        self.ended = False
        self._reader: weakref.ref[AsyncGeneratorType[Reply | Failure, None]] | None = None
        self.work: asyncio.Future[None] | None = None
        """The generation, kept alive while its rows are read."""

    def read(self) -> ReplyStream:
        """The reply's stream, for its reader alone: closing it (even before reading it) or
        dropping it stops the row."""
        reader = self._pieces()
        self._reader = weakref.ref(cast("AsyncGeneratorType[Reply | Failure, None]", reader))
        return reader

    @property
    def stopped(self) -> bool:
        """Whether the reader is gone (generating thread)."""
        reader = self._reader() if self._reader is not None else None
        return reader is None or reader.ag_frame is None

    def put(self, piece: Reply) -> None:
        """A piece of the reply (generating thread)."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, piece)

    def end(self, last: Reply | Failure | None = None) -> None:
        """The reply is over, with a last piece or a failure (generating thread)."""
        if self.ended:
            return
        self.ended = True
        for item in (last, None) if last is not None else (None,):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def _pieces(self) -> AsyncGenerator[Reply | Failure, None]:
        while (item := await self._queue.get()) is not None:
            yield item
            if isinstance(item, Failure):
                return


class _Streamer(StoppingCriteria):
    """Called by `generate` after each token: hands each row's new text to its reader, and stops
    the rows whose readers are gone."""

    def __init__(self, rows: list[_Row], tokenizer: Tokenizer, eos: list[int]) -> None:
        self.rows = rows
        self.tokenizer = tokenizer
        self.eos = set(eos)
        self.decoders = [DecodeStream(skip_special_tokens=True) for _ in rows]

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        for row, decoder, token in zip(
            self.rows, self.decoders, input_ids[:, -1].tolist(), strict=True
        ):
            if row.ended or row.stopped:
                continue
            if token in self.eos:
                row.end()
            elif piece := decoder.step(self.tokenizer, token):
                row.put(Reply(piece))
        stop = [row.ended or row.stopped for row in self.rows]
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)


def _failure(error: Exception, batch_size: int) -> Failure:
    """What a batch that raised gives each of its conversations."""
    oom = isinstance(error, torch.OutOfMemoryError)
    reason = "out_of_memory" if oom else "generation_error"
    log.warning("a batch of %d conversations failed (%s)", batch_size, reason, exc_info=error)
    return Failure(reason, f"{type(error).__name__}: {str(error)[:DETAIL_CHARS]}")


def _eos_ids(eos: int | list[int] | None) -> list[int]:
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
