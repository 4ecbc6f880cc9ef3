"""What makes a folder in a store a model: config.json, uploaded last (rlkd.models.publish_model),
so a reader never takes a half-uploaded model for one."""

from __future__ import annotations

from pathlib import Path

from rlkd.store.local import LocalStore
from rlkd.store.models import model_stored


def test_a_model_is_stored_once_its_config_is(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert not model_stored(store, "gsrm/")

    store.put_bytes("gsrm/model.safetensors", b"weights")  # the upload so far
    assert not model_stored(store, "gsrm")

    store.put_bytes("gsrm/config.json", b"{}")
    assert model_stored(store, "gsrm/") and model_stored(store, "/gsrm")
    assert not model_stored(store, "gs")
