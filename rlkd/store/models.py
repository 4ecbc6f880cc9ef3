"""What makes a folder in a store a model, for every writer and reader (the learner, the GSRM
build, `rlkd run`, the operator, which loads no ML stack)."""

from __future__ import annotations

from pathlib import Path

from rlkd.store.base import StoreBase

WEIGHT_FILES = ("config.json",)
"""What a folder must hold to be a model (transformers' save_pretrained writes it)."""


def upload_model(store: StoreBase, folder: Path, key: str) -> None:
    """The save_pretrained `folder` to `key`, config.json last (see model_stored)."""
    prefix = key.strip("/") + "/"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in sorted(files, key=lambda p: p.relative_to(folder).as_posix() == WEIGHT_FILES[0]):
        store.put_file(prefix + path.relative_to(folder).as_posix(), path)


def model_stored(store: StoreBase, key: str) -> bool:
    """Whether a whole model is at `key` in `store`: its config.json, which `upload_model`
    writes last, so a half-uploaded model is none."""
    return store.exists(f"{key.strip('/')}/{WEIGHT_FILES[0]}")
