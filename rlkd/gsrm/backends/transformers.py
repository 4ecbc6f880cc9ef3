"""The transformers backend: a Hugging Face model inside this process (CPU or GPU).

Conversations go through the model's chat template, are left-padded into batches of
`batch_size` and decoded greedily with `generate`. Generation runs in a worker thread, one batch
at a time, so the event loop that awaits it stays free. A batch that raises (out of memory, a
chat template that rejects a conversation) becomes a `Failure` for each of its conversations,
logged, so that it costs rewards, not the training run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlkd.gsrm.backends.chat import Messages, Reply
from rlkd.gsrm.types import Failure

log = logging.getLogger(__name__)
DETAIL_CHARS = 300


class TransformersChat:
    """A `ChatModel` loaded from `model` (a local directory or a hub id)."""

    def __init__(self, model: str, *, batch_size: int, device: str | None = None) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype="auto").to(self.device)  # type: ignore[arg-type]  # transformers' stub of .to
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
        return await asyncio.to_thread(self._generate, list(conversations), max_tokens, temperature)

    def _generate(
        self, conversations: list[Messages], max_tokens: int, temperature: float = 0.0
    ) -> list[Reply | Failure]:
        replies: list[Reply | Failure] = []
        with self._lock:
            for start in range(0, len(conversations), self.batch_size):
                batch = conversations[start : start + self.batch_size]
                try:
                    replies += self._batch(batch, max_tokens, temperature)
                except Exception as error:
                    replies += [_failure(error, len(batch))] * len(batch)
        return replies

    @torch.inference_mode()
    def _batch(
        self, conversations: list[Messages], max_tokens: int, temperature: float
    ) -> list[Reply]:
        prompts = [
            self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
            for c in conversations
        ]
        inputs = self.tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        output = self.model.generate(
            **inputs,
            max_new_tokens=max_tokens,
            do_sample=temperature > 0,
            **({"temperature": temperature} if temperature > 0 else {}),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        stops = torch.tensor(
            _eos_ids(self.model.generation_config.eos_token_id), device=self.device
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [
            Reply(
                self.tokenizer.decode(row, skip_special_tokens=True),  # type: ignore[arg-type]  # one row: a str
                truncated=not torch.isin(row, stops).any().item(),
            )
            for row in new_tokens
        ]


def _failure(error: Exception, batch_size: int) -> Failure:
    """What a batch that raised gives each of its conversations."""
    oom = isinstance(error, torch.OutOfMemoryError)
    reason = "out_of_memory" if oom else "generation_error"
    log.warning("a batch of %d conversations failed (%s)", batch_size, reason, exc_info=error)
    return Failure(reason, f"{type(error).__name__}: {str(error)[:DETAIL_CHARS]}")


def _eos_ids(eos: int | list[int] | None) -> list[int]:
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
