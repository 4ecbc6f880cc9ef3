"""The shipped toy domain and tiny student, so the tiny example runs on a fresh CPU machine with
nothing prepared: `toy://arithmetic` (multi-step integer arithmetic with several valid orders, a
scripted teacher that prefers one) and `toy://tiny-student` (a tiny Qwen2, SFT-warmed on
correct reasoning in random orders). Both are built on first use, deterministically, and cached
in the job's store; only these names are built.

    records = toy_records("arithmetic", store)
    path = toy_model("tiny-student", store, cache_dir)

No ML stack is imported here: torch, transformers and tokenizers load inside the functions that
build models.
"""

from rlkd.toy.model import build_tiny_model
from rlkd.toy.refs import (
    TOY_DATASETS,
    TOY_MODELS,
    TOY_SCHEME,
    VERSION,
    toy_model,
    toy_records,
)
from rlkd.toy.student import TOY_SYSTEM_PROMPT, Recipe

__all__ = [
    "TOY_DATASETS",
    "TOY_MODELS",
    "TOY_SCHEME",
    "TOY_SYSTEM_PROMPT",
    "VERSION",
    "Recipe",
    "build_tiny_model",
    "toy_model",
    "toy_records",
]
