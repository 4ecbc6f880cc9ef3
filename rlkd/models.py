"""Model references made local: the learner and the evaluator load a directory, wherever the
spec says the weights are (rlkd.spec.refs)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from rlkd.errors import ModelError
from rlkd.spec.refs import S3_SCHEME, STORE_SCHEME, TOY_SCHEME
from rlkd.store.base import Store
from rlkd.store.job import JobStores
from rlkd.store.models import WEIGHT_FILES, model_stored, upload_model

if TYPE_CHECKING:
    from rlkd.gsrm.backends import LocalModel


def local_model(ref: str, stores: JobStores, cache_dir: Path, *, field: str) -> str:
    """A directory (or, for a hub id, the id itself) that `from_pretrained` loads `ref` from.

    store:// and s3:// models are downloaded once into `cache_dir` (atomically: the ranks of one
    node may ask together); toy:// models are built on first use (rlkd.toy). `field` names the
    spec field in errors.
    """
    if ref.startswith(TOY_SCHEME):
        from rlkd.toy import toy_model

        return str(toy_model(ref.removeprefix(TOY_SCHEME), stores.shared, cache_dir))
    location = model_location(ref, stores, field=field)
    if location is not None:
        return str(_download(*location, ref, cache_dir, field))
    if ref.startswith("/"):
        if not Path(ref, WEIGHT_FILES[0]).is_file():
            raise ModelError(
                f"{field}: {ref} holds no model (no {WEIGHT_FILES[0]}); give a folder written by "
                "save_pretrained"
            )
        return ref
    return ref  # a hub id: from_pretrained downloads it (where the hub can be reached)


def model_loader(stores: JobStores, cache_dir: Path) -> LocalModel:
    """How the in-process (transformers) backends of one job load a model kept in its store: a
    copy downloaded once into `cache_dir` (local_model)."""

    def load(ref: str, field: str) -> str:
        return local_model(ref, stores, cache_dir, field=field)

    return load


def model_location(ref: str, stores: JobStores, *, field: str) -> tuple[Store, str] | None:
    """The store and key prefix of a store:// (the shared store) or s3:// (its own bucket) model
    reference; None for any other reference."""
    if ref.startswith(STORE_SCHEME):
        return stores.shared, ref.removeprefix(STORE_SCHEME)
    if ref.startswith(S3_SCHEME):
        bucket, _, key = ref.removeprefix(S3_SCHEME).partition("/")
        if stores.open_bucket is None:
            raise ModelError(f"{field}: {ref} needs an S3 store (spec.storage)")
        return stores.open_bucket(bucket), key
    return None


def publish_model(folder: Path, ref: str, stores: JobStores, *, field: str) -> str:
    """Upload the save_pretrained `folder` to the store:// or s3:// `ref`; returns its store URI."""
    location = model_location(ref, stores, field=field)
    if location is None:
        raise ModelError(f"{field}: {ref} is not a store:// or s3:// reference to upload to")
    store, key = location
    upload_model(store, folder, key)
    return store.uri_for(key.strip("/"))


def _download(store: Store, key: str, ref: str, cache_dir: Path, field: str) -> Path:
    prefix = key.strip("/") + "/"
    target = cache_dir / "models" / prefix.strip("/").replace("/", "--")
    if (target / WEIGHT_FILES[0]).is_file():
        return target
    keys = store.list(prefix)
    if not any(k.removeprefix(prefix) == WEIGHT_FILES[0] for k in keys):
        where = store.uri_for(prefix.rstrip("/"))  # a key has no trailing slash
        raise ModelError(
            f"{field}: no model at {ref} ({WEIGHT_FILES[0]} missing in {where}); "
            "upload a save_pretrained folder there or fix the reference"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    for k in keys:
        path = staging / k.removeprefix(prefix)
        path.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(k, path)
    try:
        os.rename(staging, target)
    except OSError:  # another process of this node got there first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def run_model(store: Store, cache_dir: Path) -> tuple[str, Path] | None:
    """The run's final model (its store URI and a local copy), or None before it exists."""
    from rlkd.spec.progress import MODEL_PREFIX

    if not model_stored(store, MODEL_PREFIX):
        return None
    uri = store.uri_for(MODEL_PREFIX.rstrip("/"))
    target = cache_dir / "model"
    for key in store.list(MODEL_PREFIX):
        path = target / key.removeprefix(MODEL_PREFIX)
        path.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, path)
    return uri, target
