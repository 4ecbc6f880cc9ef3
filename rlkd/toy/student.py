"""The toy student: a tiny Qwen2 that solves the toy arithmetic problems but reasons in random
valid orders, so it lacks the teacher's structure (rightmost group first) that RLKD then
transfers.

It is built offline and deterministically: a tokenizer trained on the toy domain's text (so its
sequences are short), random weights from a seed, then an SFT warm-up (a plain torch loop on the
CPU) on correct reasoning in RANDOM valid orders, formatted exactly as the learner prompts it:
the chat template over [system TOY_SYSTEM_PROMPT, user problem] with the generation prompt, and
the completion `<think>...</think><answer>\\boxed{...}</answer>` followed by the end token.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlkd.toy import arithmetic
from rlkd.toy.model import CORPUS, Shape, build_model, train_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TOY_SYSTEM_PROMPT = (
    "Reason step by step in <think> </think>, then answer in <answer> </answer> as \\boxed{}."
)
"""The system prompt the toy student is warmed up with (the tiny example's
spec.grpo.systemPrompt): a student this small follows only the prompt it was trained on."""


@dataclass(frozen=True)
class Recipe:
    """How the toy student is made; any change here needs a new toy VERSION."""

    shape: Shape = field(default_factory=Shape)
    """hidden 128, 4 heads, 2 layers: about 0.39M parameters."""
    max_positions: int = 512
    sft_steps: int = 600
    """Measured on 2 idle CPU cores: about 60 s (10 steps/s; 2.4 s/step when the cores are
    shared with other work), peak RSS under 0.8 GB; greedy held-out accuracy then 0.23 and
    structure alignment 0.17, first picks spread over the valid orders. (1000 steps: 0.33 and
    0.36, but GRPO then lost more accuracy in the tiny example: 0.33 -> 0.20.)"""
    batch_size: int = 16
    learning_rate: float = 3e-3
    """Peak; linear warm-up, then linear decay to a tenth."""
    warmup_steps: int = 30
    sft_problems: int = 4000
    """Distinct training problems the warm-up draws from (each time in a fresh random order)."""
    tokenizer_problems: int = 600
    vocab_size: int = 512
    seed: int = 0


def messages(problem: str, system_prompt: str = TOY_SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The conversation the learner prompts the student with."""
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": problem}]


def prompt_text(tokenizer: PreTrainedTokenizerBase, problem: str) -> str:
    """The rendered prompt, generation prompt included, as the learner renders it."""
    return tokenizer.apply_chat_template(
        messages(problem), add_generation_prompt=True, tokenize=False
    )


def tokenizer_corpus(recipe: Recipe) -> list[str]:
    """What the toy tokenizer learns merges from: the generic corpus, the system prompt, and
    problems with their reasoning in random orders."""
    rng = random.Random(recipe.seed)
    texts = [*CORPUS]
    for problem in arithmetic.problems("train", recipe.tokenizer_problems, seed=recipe.seed):
        # The chat template's role lines, without its special tokens (they are never split).
        texts += [
            f"system\n{TOY_SYSTEM_PROMPT}\nuser\n{problem.text}\nassistant\n",
            arithmetic.completion(problem, random_order(problem, rng)),
        ]
    return texts


def random_order(problem: arithmetic.Problem, rng: random.Random) -> tuple[int, ...]:
    order = list(range(len(problem.groups)))
    rng.shuffle(order)
    return tuple(order)


def build_student(path: Path, recipe: Recipe = Recipe(), *, progress: bool = True) -> Path:
    """Build the toy student into `path` (which must not exist yet): tokenizer, random
    weights, SFT warm-up on random valid orders, save_pretrained."""
    corpus = tokenizer_corpus(recipe)
    tokenizer = train_tokenizer(corpus, vocab_size=recipe.vocab_size)
    build_model(
        path,
        tokenizer=tokenizer,
        shape=recipe.shape,
        seed=recipe.seed,
        max_positions=recipe.max_positions,
        checks=corpus[:: max(1, len(corpus) // 50)],
    )
    warm_up(path, recipe, progress=progress)
    return path


def warm_up(path: Path, recipe: Recipe, *, progress: bool = True) -> None:
    """SFT the model at `path` in place on completions in random valid orders (loss on the
    completion and its end token only)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    model = Qwen2ForCausalLM.from_pretrained(path)
    model.train()
    rng = random.Random(recipe.seed + 1)
    pool = arithmetic.problems("train", recipe.sft_problems, seed=recipe.seed)
    # Each batch holds problems with the same number of groups, so little of it is padding.
    buckets = [[p for p in pool if len(p.groups) == count] for count in arithmetic.GROUP_COUNTS]
    weights = arithmetic.GROUP_WEIGHTS
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=recipe.learning_rate, betas=(0.9, 0.99), weight_decay=0.0
    )

    def factor(step: int) -> float:  # linear warm-up, then linear decay to 10%
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        rest = (step - recipe.warmup_steps) / max(1, recipe.sft_steps - recipe.warmup_steps)
        return 1.0 - 0.9 * rest

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    started = time.monotonic()
    loss_value = float("nan")
    with torch.random.fork_rng():
        torch.manual_seed(recipe.seed)
        bar = tqdm(range(recipe.sft_steps), desc="toy student: SFT warm-up", disable=not progress)
        for _ in bar:
            (bucket,) = rng.choices(buckets, weights=weights)
            batch = [rng.choice(bucket) for _ in range(recipe.batch_size)]
            ids, labels, mask = _batch(tokenizer, batch, rng)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
    log.debug(
        "toy student warmed up: %d SFT steps of %d in %.0f s, final loss %.3f",
        recipe.sft_steps,
        recipe.batch_size,
        time.monotonic() - started,
        loss_value,
    )
    model.eval()
    model.save_pretrained(path)


def _batch(
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[arithmetic.Problem],
    rng: random.Random,
) -> tuple[Any, Any, Any]:
    """input ids, labels (-100 outside the completion) and attention mask, right-padded."""
    import torch

    rows: list[tuple[list[int], list[int]]] = []
    for problem in problems:
        prompt = tokenizer(prompt_text(tokenizer, problem.text), add_special_tokens=False)
        done = arithmetic.completion(problem, random_order(problem, rng))
        completion = tokenizer(done, add_special_tokens=False)
        prompt_ids = prompt["input_ids"]
        completion_ids = [*completion["input_ids"], tokenizer.eos_token_id]
        rows.append((prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in rows])
    labels = torch.tensor([x + [-100] * (width - len(x)) for _, x in rows])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in rows])
    return ids, labels, mask
