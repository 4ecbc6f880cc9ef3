"""The job's examples as the rows GRPOTrainer reads: a chat prompt (the recipe's system prompt,
then the problem) plus the columns the reward functions read, under the names the spec gives
them. Prompts longer than `grpo.maxPromptLength` tokens are dropped, not cut: a truncated problem
is a different problem."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlkd.data import Example, Messages, Record, examples, prompt_messages
from rlkd.errors import DatasetError
from rlkd.spec.job import RLKDJobSpec


def reward_columns(spec: RLKDJobSpec, example: Example) -> dict[str, str]:
    """The columns the reward functions read, named as the spec names them."""
    columns = spec.dataset.columns
    row = {columns.problem: example.problem, columns.answer: example.answer}
    if spec.teacher.source == "decompositions":
        row[columns.teacher_decomposition] = example.teacher
    else:
        row[columns.teacher_reasoning] = example.teacher
    if columns.domain is not None:
        row[columns.domain] = example.domain
    return row


@dataclass(frozen=True)
class PromptRows:
    rows: list[dict[str, Any]]
    dropped: int
    """Prompts longer than grpo.maxPromptLength tokens, left out."""


def prompt_rows(
    spec: RLKDJobSpec, records: Sequence[Record], count_tokens: Callable[[Messages], int]
) -> PromptRows:
    """The training rows of `records`; `count_tokens` measures a prompt as the student's chat
    template renders it."""
    rows, dropped = [], 0
    for example in examples(records, spec):
        prompt = prompt_messages(spec, example.problem)
        if count_tokens(prompt) > spec.grpo.max_prompt_length:
            dropped += 1
            continue
        rows.append({"prompt": prompt, **reward_columns(spec, example)})
    if not rows:
        raise DatasetError(
            f"no training example is left: the dataset has {len(records)} selected rows and "
            f"{dropped} of them are longer than grpo.maxPromptLength "
            f"({spec.grpo.max_prompt_length} tokens); raise it or check spec.dataset"
        )
    return PromptRows(rows, dropped)


def chat_token_counter(tokenizer: Any) -> Callable[[Messages], int]:
    """Prompt length in tokens, as TRL will tokenize it (chat template, generation prompt)."""

    def count(messages: Messages) -> int:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)

    return count
