"""Build a tiny random-weight Qwen2 chat model offline (nothing can come from a model hub here).

    path = build_tiny_model(tmp_path / "tiny")

The tokenizer is a byte-level BPE trained on the spot with Qwen2's normaliser, split regex and
ByteLevel settings, so transformers 5 reloads it as `Qwen2Tokenizer` and tokenises the same; the
config (hidden 128, 4 heads, head size 32) is one vLLM's CPU kernels accept. It has a ChatML chat
template with `{% generation %}` markers (TRL's assistant-only loss needs them). Its replies are
random text: tests assert on shapes, counts and limits, never on what it says.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE

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
CORPUS = [
    "[Meta-reasoning 1]: First find what the problem asks for.",
    "[Sub-problem 1]: What is the sum of 12 and 30?",
    "[Answer 1]: 42",
    "Decompose this reasoning into steps. Answer with one word: yes or no.",
    "Are these two steps devoted to the same problem? yes",
    "Do these two sub-problems differ? no",
    "Let x be the number of apples. Then 3x + 4 = 19, so x = 5.",
    "The area of a circle of radius r is pi r^2; the answer is \\boxed{25}.",
    "<think>\nWe add the numbers.\n</think>\n<answer>\n7\n</answer>",
]
VOCAB_SIZE = 512


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE set up exactly as Qwen2Tokenizer sets itself up on reload."""
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
        vocab_size=VOCAB_SIZE,
        special_tokens=[END_OF_TEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tokenizer


def build_tiny_model(path: Path, *, seed: int = 0, max_positions: int = 4096) -> Path:
    """Write tokenizer, config and random weights of a ~0.4M-parameter Qwen2 to `path`."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(),
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_positions,
    )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # Reloaded as Qwen2Tokenizer (transformers 5 does so for a qwen2 config).
    _set_tokenizer_class(path / "tokenizer_config.json", "Qwen2Tokenizer")
    return path


def _set_tokenizer_class(config_file: Path, name: str) -> None:
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = name
    config_file.write_text(json.dumps(config, indent=2))
