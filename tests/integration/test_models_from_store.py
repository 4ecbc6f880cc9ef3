"""A transformers GSRM, judge or annotator kept in the job's store (store:// in a local directory
and on a real S3 server, s3:// in another bucket) is downloaded once into the command's cache
and loaded from there; its model id, which keys the teacher cache, stays the reference."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import pytest

from rlkd.errors import ModelError
from rlkd.gsrm.backends import build_decomposer, chat_model
from rlkd.gsrm.backends.chat import ChatDecomposer
from rlkd.gsrm.backends.transformers import TransformersChat
from rlkd.gsrm.types import DecomposeRequest, Failure
from rlkd.job_rewards import build_structure_engine
from rlkd.models import model_loader
from rlkd.spec.job import InferenceSpec, RLKDJobSpec
from rlkd.store import LocalStore, S3Config, Store
from rlkd.store.job import JobStores
from rlkd.store.s3 import S3Store


def upload(store: Store, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put_file(prefix + path.relative_to(folder).as_posix(), path)


def test_the_reward_engine_loads_a_gsrm_from_the_store_once(
    store: Store, tiny_model: Path, tmp_path: Path
) -> None:
    upload(store, tiny_model, "models/gsrm/")
    stores = JobStores(shared=store, run=store, open_bucket=None)
    spec = RLKDJobSpec.model_validate(
        {
            "student": {"model": "toy://tiny-student"},
            "dataset": {"uri": "toy://arithmetic"},
            "gsrm": {
                "model": "store://models/gsrm",
                "backend": "transformers",
                "request": {"maxTokens": 8},
            },
            "judge": {"backend": "rule"},
        }
    )
    cache = tmp_path / "cache"
    engine = build_structure_engine(spec, store, {}, local=model_loader(stores, cache))

    decomposer = engine.decomposer
    assert isinstance(decomposer, ChatDecomposer) and isinstance(decomposer.model, TransformersChat)
    assert decomposer.model_id == "store://models/gsrm"
    [result] = asyncio.run(decomposer.decompose([DecomposeRequest("x is 5, so 2x is 10")]))
    assert isinstance(result, list | Failure)  # a random model: any well-typed result
    copies = list((cache / "models").iterdir())
    assert [p.name for p in copies] == ["models--gsrm"] and (copies[0] / "config.json").is_file()

    # Loaded again from the cache: the store's copy is not read a second time.
    for key in store.list("models/gsrm/"):
        store.delete(key)
    spec_again = InferenceSpec(model="store://models/gsrm", backend="transformers")
    again = build_decomposer(spec_again, env={}, local=model_loader(stores, cache))
    assert isinstance(again, ChatDecomposer) and isinstance(again.model, TransformersChat)


@pytest.mark.s3
def test_an_annotator_in_another_bucket_is_loaded_by_its_s3_reference(
    s3_config: S3Config, tiny_model: Path, tmp_path: Path
) -> None:
    def open_bucket(bucket: str) -> Store:
        return S3Store(dataclasses.replace(s3_config, bucket=bucket, prefix=""))

    bucket = f"models-{uuid.uuid4().hex[:12]}"
    upload(open_bucket(bucket), tiny_model, "annotators/tiny/")
    shared = S3Store(s3_config)
    stores = JobStores(shared=shared, run=shared, open_bucket=open_bucket)
    spec = InferenceSpec(model=f"s3://{bucket}/annotators/tiny", backend="transformers")

    model = chat_model(spec, "annotator", {}, local=model_loader(stores, tmp_path))
    assert isinstance(model, TransformersChat)
    [reply] = asyncio.run(model.chat([[{"role": "user", "content": "2+2?"}]], max_tokens=4))
    assert not isinstance(reply, Failure)


def test_a_model_missing_from_the_store_names_the_field_to_fix(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    stores = JobStores(shared=store, run=store, open_bucket=None)
    spec = InferenceSpec(model="store://models/nothing", backend="transformers")
    with pytest.raises(ModelError, match=r"spec\.gsrm\.build\.annotator\.model: no model at"):
        chat_model(spec, "annotator", {}, local=model_loader(stores, tmp_path / "cache"))
