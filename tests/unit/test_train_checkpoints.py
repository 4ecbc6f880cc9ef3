"""Checkpoints in the store: only complete ones are resumed from, retention never touches what a
resume needs, uploads retry and then fail loudly in the training thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlkd.errors import StoreError
from rlkd.spec.progress import COMPLETE_MARKER
from rlkd.store import LocalStore, Store
from rlkd.train.checkpoints import (
    Retry,
    Uploader,
    download,
    newest_complete,
    retain,
    stored_checkpoints,
)


def put_checkpoint(store: Store, step: int, *, complete: bool) -> None:
    prefix = f"checkpoints/checkpoint-{step}/"
    store.put_bytes(prefix + "model.safetensors", b"w" * step)
    store.put_bytes(prefix + "global_step/zero_pp_rank_0_optim_states.pt", b"o")
    if complete:
        store.put_bytes(prefix + COMPLETE_MARKER, b"")


@pytest.mark.parametrize(
    ("saved", "resume"),
    [
        ([], None),
        ([(10, False)], None),  # killed mid-upload: nothing to resume
        ([(10, True)], 10),
        ([(10, True), (20, False)], 10),  # the newer one is half-written
        ([(10, True), (20, True), (30, False)], 20),
        ([(9, True), (10, True)], 10),  # by step, not by name
    ],
)
def test_resume_from_the_newest_complete_checkpoint(
    tmp_path: Path, saved: list[tuple[int, bool]], resume: int | None
) -> None:
    store = LocalStore(tmp_path)
    for step, complete in saved:
        put_checkpoint(store, step, complete=complete)
    found = newest_complete(store)
    assert (found.step if found else None) == resume


def test_download_leaves_the_bookkeeping_out(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    put_checkpoint(store, 4, complete=True)
    store.put_bytes("checkpoints/checkpoint-4/.parts/node-0", b"")
    folder = download(store, stored_checkpoints(store)[0], tmp_path / "local")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["global_step/zero_pp_rank_0_optim_states.pt", "model.safetensors"]


def test_retention_keeps_the_newest_complete_and_anything_newer(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for step, complete in [(1, True), (2, False), (3, True), (4, True), (5, False)]:
        put_checkpoint(store, step, complete=complete)
    assert sorted(retain(store, 2)) == ["checkpoint-1", "checkpoint-2"]
    remaining = [(c.step, c.complete) for c in stored_checkpoints(store)]
    assert remaining == [(3, True), (4, True), (5, False)]  # 5 may still be uploading
    assert retain(store, None) == []


def save_local(root: Path, step: int) -> Path:
    folder = root / f"checkpoint-{step}"
    (folder / "global_step").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"m")
    (folder / "global_step" / "shard.pt").write_bytes(b"s")
    return folder


def test_an_upload_is_complete_only_with_every_nodes_part(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # node 1 finishes its part while node 0 waits
            store.put_bytes("checkpoints/checkpoint-2/.parts/node-1", b"")

    uploader = Uploader(store, node_rank=0, nodes=2, keep=None, sleep=sleep)
    completed: list[str] = []
    uploader.on_complete = completed.append
    uploader.submit(save_local(tmp_path / "local", 2))
    uploader.wait()
    assert [c.complete for c in stored_checkpoints(store)] == [True]
    assert len(waits) == 2 and completed == [store.uri_for("checkpoints/checkpoint-2")]


def test_a_later_checkpoint_removes_older_local_copies_only_once_uploaded(tmp_path: Path) -> None:
    store, local = LocalStore(tmp_path / "store"), tmp_path / "local"
    uploader = Uploader(store, node_rank=0, nodes=1, keep=1)
    uploader.submit(save_local(local, 2))
    uploader.wait()
    assert (local / "checkpoint-2").is_dir()
    uploader.submit(save_local(local, 4))
    uploader.wait()
    assert sorted(p.name for p in local.iterdir()) == ["checkpoint-4"]
    assert [c.step for c in stored_checkpoints(store)] == [4]  # saveTotalLimit 1 in the store


class FailingStore(LocalStore):
    """The real local store whose uploads fail `failures` times first."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put_file(self, key: str, path: str | Path) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError(f"cannot reach the store for {key}")
        super().put_file(key, path)


def test_uploads_retry_with_backoff(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "store", failures=2)
    delays: list[float] = []
    uploader = Uploader(
        store, node_rank=0, nodes=1, keep=None, retry=Retry(attempts=3), sleep=delays.append
    )
    uploader.submit(save_local(tmp_path / "local", 1))
    uploader.wait()
    assert delays == [1.0, 2.0]
    assert stored_checkpoints(store)[0].complete


def test_an_upload_that_keeps_failing_is_raised_in_the_training_thread(tmp_path: Path) -> None:
    store = FailingStore(tmp_path / "store", failures=100)
    uploader = Uploader(
        store, node_rank=0, nodes=1, keep=None, retry=Retry(attempts=2), sleep=lambda _: None
    )
    uploader.submit(save_local(tmp_path / "local", 1))
    with pytest.raises(StoreError, match="the store failed 2 times"):
        uploader.wait()
    assert not any(c.complete for c in stored_checkpoints(store))
