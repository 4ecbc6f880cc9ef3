"""`toy://` references: the toy datasets and the toy student, built on first use and cached.

Datasets are small and generated in well under a second; they are written to the job's store on
first use (key `toy/<name>-<VERSION>.jsonl`) so every phase and every process reads the very
same rows from there. The student takes minutes to build (its SFT warm-up), so it is looked up
in a local cache directory, then in the store (`toy/models/<name>-<VERSION>/`), and only then
built and uploaded. Concurrent callers (the ranks of one node) take a file lock and see the
directory appear whole, by an atomic rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlkd.errors import DatasetError, ModelError, ObjectNotFoundError
from rlkd.spec.refs import TOY_SCHEME
from rlkd.store.base import Store
from rlkd.toy import arithmetic
from rlkd.toy.student import Recipe, build_student

log = logging.getLogger(__name__)

VERSION = "1"
"""Part of every cache key: bump it whenever the generator or the student's recipe changes, so
no store serves a stale build."""

TOY_DATASETS = ("arithmetic", "arithmetic-test")
"""arithmetic: the training split; arithmetic-test: held-out problems (disjoint by text)."""
TOY_MODELS = ("tiny-student",)

DATASET_SIZES = {"arithmetic": 2000, "arithmetic-test": 256}
_SPLIT = {"arithmetic": "train", "arithmetic-test": "test"}
MANIFEST = "manifest.json"
"""Written last into a model's store prefix: its presence means the upload is whole."""


def toy_records(name: str, store: Store | None) -> list[dict[str, Any]]:
    """The records of the toy dataset `name` (columns problem, answer, teacher_reasoning,
    orders, groups): read from `store` when it holds them, else generated (and written there)."""
    if name not in TOY_DATASETS:
        raise DatasetError(
            f"{TOY_SCHEME}{name}: no such toy dataset; the toy datasets are "
            + ", ".join(TOY_SCHEME + n for n in TOY_DATASETS)
        )
    if store is None:
        return _generate(name)
    key = f"toy/{name}-{VERSION}.jsonl"
    try:
        data = store.get_bytes(key)
    except ObjectNotFoundError:
        records = _generate(name)
        store.put_bytes(
            key, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()
        )
        return records
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _generate(name: str) -> list[dict[str, Any]]:
    return [arithmetic.record(p) for p in arithmetic.problems(_SPLIT[name], DATASET_SIZES[name])]


def toy_model(
    name: str, store: Store | None, cache_dir: Path, *, recipe: Recipe | None = None
) -> Path:
    """A local directory holding the toy model `name` (save_pretrained model and tokenizer):
    from `cache_dir` when there, else downloaded from `store`, else built (minutes: an SFT
    warm-up on the CPU) and uploaded to `store`. `recipe` changes how it is built (tests use a
    short warm-up); a recipe other than the default has cache keys of its own."""
    if name not in TOY_MODELS:
        raise ModelError(
            f"{TOY_SCHEME}{name}: no such toy model; the toy models are "
            + ", ".join(TOY_SCHEME + n for n in TOY_MODELS)
        )
    recipe = recipe or Recipe()
    return cached_model(
        f"{name}-{_version(recipe)}",
        store,
        cache_dir,
        lambda staging: _BUILDERS[name](staging, recipe),
        recipe=dataclasses.asdict(recipe),
    )


def cached_model(
    tag: str,
    store: Store | None,
    cache_dir: Path,
    build: Callable[[Path], object],
    *,
    recipe: dict[str, Any],
) -> Path:
    """A local directory `cache_dir/toy-<tag>` holding the model `tag`: there already, else
    downloaded from `store` (`toy/models/<tag>/`), else written by `build` (into a directory
    that does not exist yet) and uploaded with a manifest naming its files and `recipe`. `tag`
    must change whenever what `build` makes does (its version and recipe in it). Other tiny
    models built offline (the test suite's mini GSRM and judge) are cached the same way."""
    target = Path(cache_dir) / f"toy-{tag}"
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".toy-{tag}.lock"):
        if _complete(target):  # another process built it while we waited
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".toy-{tag}-", dir=target.parent))
        try:
            prefix = f"toy/models/{tag}/"
            if store is not None and store.exists(prefix + MANIFEST):
                _download(store, prefix, staging)
            else:
                _build(tag, build, staging, store, prefix, recipe)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _version(recipe: Recipe) -> str:
    if recipe == Recipe():
        return VERSION
    digest = hashlib.sha256(repr(dataclasses.astuple(recipe)).encode()).hexdigest()
    return f"{VERSION}-{digest[:12]}"


def _complete(path: Path) -> bool:
    return (path / "config.json").is_file()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(store: Store, prefix: str, staging: Path) -> None:
    files = store.get_json(prefix + MANIFEST)["files"]
    for file in files:
        store.get_file(prefix + file, staging / file)


def _build(
    tag: str,
    build: Callable[[Path], object],
    staging: Path,
    store: Store | None,
    prefix: str,
    recipe: dict[str, Any],
) -> None:
    started = time.monotonic()
    shutil.rmtree(staging)  # the builder writes a fresh directory
    build(staging)
    files = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    where = "not stored (no store)"
    if store is not None:
        for file in files:
            store.put_file(prefix + file, staging / file)
        store.put_json(prefix + MANIFEST, {"files": files, "recipe": recipe})
        where = f"stored at {store.uri_for(prefix.rstrip('/'))}"
    log.info("built %s in %.0f s; %s", tag, time.monotonic() - started, where)


_BUILDERS: dict[str, Callable[[Path, Recipe], Path]] = {"tiny-student": build_student}
