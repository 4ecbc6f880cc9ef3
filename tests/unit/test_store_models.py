"""What makes a folder in a store a model: config.json, uploaded last (rlkd.models.publish_model),
so a reader never takes a half-uploaded model for one."""

from __future__ import annotations

from pathlib import Path

from rlkd.store.local import LocalStore
from rlkd.store.models import model_stored, upload_model


def test_a_model_is_stored_once_its_config_is(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert not model_stored(store, "gsrm/")

    store.put_bytes("gsrm/model.safetensors", b"weights")  # the upload so far
    assert not model_stored(store, "gsrm")

    store.put_bytes("gsrm/config.json", b"{}")
    assert model_stored(store, "gsrm/") and model_stored(store, "/gsrm")
    assert not model_stored(store, "gs")


class Recorded(LocalStore):
    """A LocalStore that remembers the order of its writes."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    def put_file(self, key: str, path: str | Path) -> None:
        super().put_file(key, path)
        self.written.append(key)


def test_a_model_is_uploaded_config_last(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "a/z.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    store = Recorded(tmp_path / "store")

    upload_model(store, folder, "/runs/r/model/")

    assert store.written[-1] == "runs/r/model/config.json"
    assert sorted(store.written) == [
        f"runs/r/model/{n}"
        for n in sorted(["a/z.json", "config.json", "model.safetensors", "tokenizer.json"])
    ]
    assert model_stored(store, "runs/r/model")
