"""Tiny Qwen2 chat models built offline (nothing can come from a model hub on a test machine).

    path = build_tiny_model(tmp_path / "tiny")      # random weights, for tests and benchmarks

The tokenizer is a byte-level BPE trained on the spot with Qwen2's normaliser, split regex and
ByteLevel settings, so transformers 5 reloads it as `Qwen2Tokenizer` and tokenises the same
(checked on every build); the config (hidden 128, 4 heads, head size 32) is one vLLM's CPU
kernels accept. It has a ChatML chat template with `{% generation %}` markers (TRL's
assistant-only loss needs them). The random model's replies are random text: tests assert on
shapes, counts and limits, never on what it says. The toy student (`rlkd.toy.student`) is the
same build with a tokenizer that has also learnt the toy domain's text, then SFT-warmed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Qwen2's split regex (transformers' Qwen2Tokenizer.PRETOKENIZE_REGEX).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|im_start|>assistant\n{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}\n"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Words the tokenizer learns merges from: the step format, yes/no, and some maths.
CORPUS = (
    "[Meta-reasoning 1]: First find what the problem asks for.",
    "[Sub-problem 1]: What is the sum of 12 and 30?",
    "[Answer 1]: 42",
    "Decompose this reasoning into steps. Answer with one word: yes or no.",
    "Are these two steps devoted to the same problem? yes",
    "Do these two sub-problems differ? no",
    "Let x be the number of apples. Then 3x + 4 = 19, so x = 5.",
    "The area of a circle of radius r is pi r^2; the answer is \\boxed{25}.",
    "<think>\nWe add the numbers.\n</think>\n<answer>\n7\n</answer>",
)
VOCAB_SIZE = 512


@dataclass(frozen=True)
class Shape:
    """A tiny Qwen2's size. Hidden 128 with 4 heads keeps the head size at 32, which vLLM's CPU
    kernels accept."""

    hidden: int = 128
    intermediate: int = 256
    layers: int = 2
    heads: int = 4
    kv_heads: int = 4


def train_tokenizer(corpus: Iterable[str] = CORPUS, *, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE set up exactly as Qwen2Tokenizer sets itself up on reload."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tokenizer = Tokenizer(BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(corpus)
    tokenizer.train_from_iterator(corpus * 4 if len(corpus) < 100 else corpus, trainer=trainer)
    return tokenizer


def build_model(
    path: Path,
    *,
    tokenizer: Tokenizer,
    shape: Shape = Shape(),
    seed: int = 0,
    max_positions: int = 4096,
    checks: Sequence[str] = CORPUS,
) -> Path:
    """Write `tokenizer`, a Qwen2 config of `shape` and random weights (from `seed`) to `path`;
    asserts that `AutoTokenizer` reloads the tokenizer and tokenises `checks` the same."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_positions,
    )
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=fast.convert_tokens_to_ids(IM_END),
        pad_token_id=fast.convert_tokens_to_ids(END_OF_TEXT),
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(path)
    fast.save_pretrained(path)
    # Reloaded as Qwen2Tokenizer (transformers 5 does so for a qwen2 config).
    _set_tokenizer_class(path / "tokenizer_config.json", "Qwen2Tokenizer")
    check_reload(path, tokenizer, checks)
    return path


def build_tiny_model(path: Path, *, seed: int = 0, max_positions: int = 4096) -> Path:
    """Write tokenizer, config and random weights of a ~0.4M-parameter Qwen2 to `path`."""
    return build_model(path, tokenizer=train_tokenizer(), seed=seed, max_positions=max_positions)


def check_reload(path: Path, tokenizer: Tokenizer, texts: Iterable[str]) -> None:
    """Raise AssertionError unless `AutoTokenizer` reloads `path` as a tokenizer that encodes
    and decodes `texts` exactly as `tokenizer` does."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(path)
    for text in texts:
        ids = reloaded(text, add_special_tokens=False)["input_ids"]
        if ids != tokenizer.encode(text, add_special_tokens=False).ids:
            raise AssertionError(f"{path}: the reloaded tokenizer splits {text!r} differently")
        if reloaded.decode(ids) != text:
            raise AssertionError(f"{path}: the reloaded tokenizer does not round-trip {text!r}")


def _set_tokenizer_class(config_file: Path, name: str) -> None:
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = name
    config_file.write_text(json.dumps(config, indent=2))
