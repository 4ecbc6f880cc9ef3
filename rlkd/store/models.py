"""What makes a folder in a store a model, for every reader (the learner, `rlkd run`, the
operator, which loads no ML stack)."""

from __future__ import annotations

from rlkd.store.base import StoreBase

WEIGHT_FILES = ("config.json",)
"""What a folder must hold to be a model (transformers' save_pretrained writes it)."""


def model_stored(store: StoreBase, key: str) -> bool:
    """Whether a whole model is at `key` in `store`: its config.json, which
    rlkd.models.publish_model uploads last, so a half-uploaded model is none."""
    return store.exists(f"{key.strip('/')}/{WEIGHT_FILES[0]}")
