"""Checkpoints in the store: uploaded in the background, complete only once every node's files
are there, resumed from the newest complete one, kept to `grpo.saveTotalLimit`.

Layout under the run's prefix: `checkpoints/checkpoint-<step>/<files>` as the Trainer saved
them; each node adds `.parts/node-<rank>` once its own files are up (with ZeRO every node holds
its own ranks' shards), and node 0 writes the `COMPLETE` marker last, once every node's part is
there. A checkpoint without the marker (a pod killed mid-upload) is never resumed from.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkd.errors import StoreError
from rlkd.spec.progress import CHECKPOINTS_PREFIX, COMPLETE_MARKER, TENSORBOARD_PREFIX
from rlkd.store.base import Store

log = logging.getLogger(__name__)

_NAME = re.compile(r"checkpoint-(\d+)")
PARTS = ".parts"


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint folder's name, or None when it is not one."""
    match = _NAME.fullmatch(name)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class StoredCheckpoint:
    name: str
    step: int
    complete: bool


def stored_checkpoints(store: Store) -> list[StoredCheckpoint]:
    """Every checkpoint folder in the store, oldest first, with whether it is complete."""
    folders: dict[str, bool] = {}
    for key in store.list(CHECKPOINTS_PREFIX):
        name, _, rest = key.removeprefix(CHECKPOINTS_PREFIX).partition("/")
        if checkpoint_step(name) is not None:
            folders[name] = folders.get(name, False) or rest == COMPLETE_MARKER
    found = [StoredCheckpoint(n, checkpoint_step(n) or 0, c) for n, c in folders.items()]
    return sorted(found, key=lambda c: c.step)


def newest_complete(store: Store) -> StoredCheckpoint | None:
    """The checkpoint a restarted learner resumes from: the newest one that holds the marker."""
    complete = [c for c in stored_checkpoints(store) if c.complete]
    return complete[-1] if complete else None


def download(store: Store, checkpoint: StoredCheckpoint, into: Path) -> Path:
    """Copy a stored checkpoint into `into/<name>` (the bookkeeping files left out)."""
    prefix = f"{CHECKPOINTS_PREFIX}{checkpoint.name}/"
    target = into / checkpoint.name
    for key in store.list(prefix):
        relative = key.removeprefix(prefix)
        if relative == COMPLETE_MARKER or relative.startswith(f"{PARTS}/"):
            continue
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, path)
    return target


def resume_point(store: Store, workdir: Path, state: Any) -> str | None:
    """The newest complete checkpoint, downloaded once per node into `workdir/checkpoints`
    (`state`: accelerate's PartialState); None on a fresh start."""
    checkpoint = newest_complete(store)
    if checkpoint is None:
        return None
    local = Path(workdir, "checkpoints", checkpoint.name)
    if state.is_local_main_process and not (local / "trainer_state.json").is_file():
        download(store, checkpoint, local.parent)
    state.wait_for_everyone()
    return str(local)


def upload_folder(store: Store, folder: Path, prefix: str) -> None:
    """Every file below `folder` to `prefix` (a final model, TensorBoard logs)."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put_file(prefix + path.relative_to(folder).as_posix(), path)


def tensorboard_upload(store: Store) -> Callable[[], None] | None:
    """An Uploader `extra` that copies the TensorBoard logs into `store` with each checkpoint
    (None when the learner writes none)."""
    directory = os.environ.get("TENSORBOARD_LOGGING_DIR")
    if not directory:
        return None

    def upload() -> None:
        if Path(directory).is_dir():
            upload_folder(store, Path(directory), TENSORBOARD_PREFIX)

    return upload


def retain(store: Store, limit: int | None) -> list[str]:
    """Delete what a resume can never need: incomplete checkpoints older than the newest
    complete one, and complete ones beyond the newest `limit` (None keeps all). Returns the
    deleted names."""
    checkpoints = stored_checkpoints(store)
    complete = [c for c in checkpoints if c.complete]
    if not complete:
        return []
    newest = complete[-1].step
    keep = {c.name for c in complete[-limit:]} if limit else {c.name for c in complete}
    doomed = [
        c.name
        for c in checkpoints
        if (c.complete and c.name not in keep) or (not c.complete and c.step < newest)
    ]
    for name in doomed:
        # The marker goes first, so a folder half-deleted by a crash is not complete.
        for key in sorted(store.list(f"{CHECKPOINTS_PREFIX}{name}/"), key=_marker_first):
            store.delete(key)
    return doomed


def _marker_first(key: str) -> tuple[bool, str]:
    return (not key.endswith(f"/{COMPLETE_MARKER}"), key)


@dataclass(frozen=True)
class Retry:
    """How a failed upload of one file is retried before the run gives up."""

    attempts: int = 5
    first_delay: float = 1.0
    max_delay: float = 30.0

    def call(self, action: Callable[[], None], what: str, sleep: Callable[[float], None]) -> None:
        delay = self.first_delay
        for attempt in range(1, self.attempts + 1):
            try:
                action()
                return
            except StoreError as error:
                if attempt == self.attempts:
                    raise StoreError(
                        f"{what}: the store failed {self.attempts} times, last: {error}"
                    ) from error
                log.warning("%s failed (attempt %d): %s; retrying", what, attempt, error)
                sleep(delay)
                delay = min(delay * 2, self.max_delay)


class Uploader:
    """Uploads one node's checkpoints in a background thread, at most one behind training.

    `submit` returns at once unless the previous checkpoint is still uploading (then it waits:
    the backlog is bounded to one, so local disk and the store never drift far apart). A
    failure is kept and raised by the next `submit` or by `wait`, in the training thread, so
    the learner exits non-zero with one line and the restarted pod resumes.
    """

    def __init__(
        self,
        store: Store,
        *,
        node_rank: int,
        nodes: int,
        keep: int | None,
        retry: Retry = Retry(),
        part_timeout: float = 1800.0,
        sleep: Callable[[float], None] = time.sleep,
        extra: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.node_rank = node_rank
        self.nodes = nodes
        self.keep = keep
        self.retry = retry
        self.part_timeout = part_timeout
        self.sleep = sleep
        self.extra = extra
        """Called after each upload (e.g. to upload TensorBoard logs with it)."""
        self.uploaded: list[str] = []
        self.on_complete: Callable[[str], None] | None = None
        """Called on node 0 with the checkpoint's store URI once it is complete."""
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, folder: Path) -> None:
        """Upload `folder` (a saved `checkpoint-<step>`) in the background."""
        self.wait()
        self._thread = threading.Thread(
            target=self._run, args=(folder,), name="rlkd-checkpoint-upload", daemon=True
        )
        self._thread.start()

    def wait(self) -> None:
        """Block until the upload in flight is done; raise its failure, if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self, folder: Path) -> None:
        try:
            self.upload(folder)
        except BaseException as error:  # kept for the training thread
            self._error = error

    def upload(self, folder: Path) -> None:
        """Upload this node's files of one checkpoint; on node 0, mark it complete once every
        node's part is there, then apply retention and remove older local checkpoints."""
        prefix = f"{CHECKPOINTS_PREFIX}{folder.name}/"
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            key = prefix + path.relative_to(folder).as_posix()
            self.retry.call(
                functools.partial(self.store.put_file, key, path), f"uploading {key}", self.sleep
            )
        part = f"{prefix}{PARTS}/node-{self.node_rank}"
        self.retry.call(lambda: self.store.put_bytes(part, b""), f"uploading {part}", self.sleep)
        if self.extra is not None:
            self.extra()
        self.uploaded.append(folder.name)
        _remove_older(folder)
        if self.node_rank != 0:
            return
        self._wait_for_parts(prefix)
        marker = prefix + COMPLETE_MARKER
        self.retry.call(lambda: self.store.put_bytes(marker, b""), "marking " + prefix, self.sleep)
        uri = self.store.uri_for(prefix.rstrip("/"))
        log.info("checkpoint %s is complete in %s", folder.name, uri)
        if self.on_complete is not None:
            self.on_complete(uri)
        retain(self.store, self.keep)

    def _wait_for_parts(self, prefix: str) -> None:
        deadline = time.monotonic() + self.part_timeout
        while True:
            parts = {k.rsplit("/", 1)[1] for k in self.store.list(f"{prefix}{PARTS}/")}
            if len(parts) >= self.nodes:
                return
            if time.monotonic() > deadline:
                raise StoreError(
                    f"{prefix}: only {len(parts)} of {self.nodes} nodes uploaded their part "
                    f"within {self.part_timeout:.0f} s"
                )
            self.sleep(2.0)


def _remove_older(folder: Path) -> None:
    """Local checkpoints older than `folder` are in the store already: free the disk."""
    step = checkpoint_step(folder.name)
    for other in folder.parent.iterdir():
        other_step = checkpoint_step(other.name)
        if other.is_dir() and other_step is not None and step is not None and other_step < step:
            shutil.rmtree(other, ignore_errors=True)
