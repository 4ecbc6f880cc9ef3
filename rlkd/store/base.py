"""What every store backend shares: the `Store` protocol, key rules, JSON encoding and
atomic file output. Backends hold only the code that talks to their medium."""

from __future__ import annotations

import json
import os
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from rlkd.errors import StoreError

# Temp files live beside their target so that `os.replace` stays on one filesystem; this
# suffix marks them, so listings skip them and no key can collide with one.
TMP_SUFFIX = ".rlkd-tmp"

_KEY_SHAPE = (
    "a key is a relative POSIX path such as 'runs/job-1/model.safetensors': no leading '/', "
    "no empty, '.' or '..' segments, no backslashes or control characters"
)


@runtime_checkable
class Store(Protocol):
    """The artifact store the learner, reward cache and operator talk to.

    Keys are relative POSIX paths under the store's root (a directory or a bucket prefix).
    A missing object raises `ObjectNotFoundError`; any other failure raises `StoreError`.
    """

    uri: str  # file:///abs/dir or s3://bucket/prefix, without a trailing slash

    def uri_for(self, key: str) -> str:
        """The full URI of one key, for status fields and messages."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write one object; readers see the old or the new bytes, never a mix."""
        ...

    def get_bytes(self, key: str) -> bytes:
        """Read one whole object."""
        ...

    def put_file(self, key: str, path: str | Path) -> None:
        """Upload a local file of any size (S3: multipart in parts of the store's part size)."""
        ...

    def get_file(self, key: str, path: str | Path) -> None:
        """Download to `path` through a temp file beside it: a failure leaves no half file."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with `prefix` (a plain string prefix, as in S3: 'a/' excludes
        'ab/x', 'a' does not), recursive and sorted, relative to the store root."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored at `key` (a prefix of other keys is not an object)."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object at `key`; absent is fine, so cleanups can be retried."""
        ...

    def put_json(self, key: str, doc: Any) -> None:
        """Write canonical JSON (sorted keys, compact, UTF-8) atomically."""
        ...

    def get_json(self, key: str) -> Any:
        """Read a JSON document; StoreError if it does not parse."""
        ...


def key_problem(key: object) -> str | None:
    """Why `key` is not a valid store key, or None; one rule set keeps both backends alike."""
    if not isinstance(key, str):
        return f"it is a {type(key).__name__}, not a string"
    if not key:
        return "it is empty"
    if key.startswith("/"):
        return "it starts with '/'"
    if "\\" in key:
        return "it contains a backslash"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        return "it contains a control character"
    for segment in key.split("/"):
        if segment in (".", ".."):
            return f"it has a {segment!r} segment"
        if not segment:
            return "it has an empty segment"
        if segment.endswith(TMP_SUFFIX):
            return f"its segment {segment!r} ends with {TMP_SUFFIX!r}, reserved for temp files"
    return None


def validate_key(key: str) -> str:
    """Return `key` unchanged, or raise StoreError saying what a valid key looks like."""
    problem = key_problem(key)
    if problem:
        raise StoreError(f"invalid store key {key!r}: {problem}; {_KEY_SHAPE}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix is a plain string prefix (as in S3): "" or a key, optionally with a
    trailing '/' so that listing 'a/' excludes 'ab/x'."""
    problem = key_problem(prefix.removesuffix("/")) if prefix else None
    if problem:
        raise StoreError(
            f"invalid store prefix {prefix!r}: {problem}; a prefix is '' or a key, "
            f"optionally ending in '/'; {_KEY_SHAPE}"
        )
    return prefix


def encode_json(doc: Any, uri: str) -> bytes:
    """Deterministic bytes, so equal documents are equal objects and cache keys are stable."""
    try:
        text = json.dumps(
            doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot write {uri} as JSON: {exc}") from exc
    return text.encode("utf-8")


def decode_json(data: bytes, uri: str) -> Any:
    """Parse a stored document; a corrupt one names its URI instead of a bare decode error."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{uri} is not a valid UTF-8 JSON document: {exc}") from exc


def os_error_message(uri: str, exc: OSError) -> str:
    """One line for a local file failure: the object, the OS's reason and the file."""
    file = exc.filename2 or exc.filename  # for a rename, the target, not the temp file
    where = f" ({file})" if file else ""
    return (
        f"cannot transfer {uri}: {exc.strerror or exc}{where}; check that the local path "
        "exists, is writable and has free space"
    )


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[bytes]]:
    """Yield a temp file beside `path` that replaces it only once fully written and synced,
    so readers never see half a file and a failure leaves no partial file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}{TMP_SUFFIX}")
    # os.open with 0o666 honours the umask, unlike mkstemp's 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class StoreBase(ABC):
    """The parts of `Store` that are the same over every medium."""

    uri: str

    def uri_for(self, key: str) -> str:
        """Full URI of one key, for status fields and error messages."""
        return f"{self.uri}/{validate_key(key)}"

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Write one object atomically: readers see the old or the new bytes, never a mix."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read one object; ObjectNotFoundError if absent."""

    def put_json(self, key: str, doc: Any) -> None:
        """Write a JSON document as one atomic object (each backend's put_bytes is atomic)."""
        self.put_bytes(key, encode_json(doc, self.uri_for(key)))

    def get_json(self, key: str) -> Any:
        """Read a JSON document written by put_json."""
        return decode_json(self.get_bytes(key), self.uri_for(key))


class SubStore(StoreBase):
    """`store` seen from below `prefix`: one phase's keys (a GSRM build's progress document and
    checkpoints, say) live apart from the run's without a second connection or layout code."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = validate_key(prefix.strip("/")) + "/"
        self.uri = store.uri_for(self.prefix.rstrip("/"))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.store.put_bytes(self.prefix + validate_key(key), data)

    def get_bytes(self, key: str) -> bytes:
        return self.store.get_bytes(self.prefix + validate_key(key))

    def put_file(self, key: str, path: str | Path) -> None:
        self.store.put_file(self.prefix + validate_key(key), path)

    def get_file(self, key: str, path: str | Path) -> None:
        self.store.get_file(self.prefix + validate_key(key), path)

    def list(self, prefix: str = "") -> list[str]:
        return [key.removeprefix(self.prefix) for key in self.store.list(self.prefix + prefix)]

    def exists(self, key: str) -> bool:
        return self.store.exists(self.prefix + validate_key(key))

    def delete(self, key: str) -> None:
        self.store.delete(self.prefix + validate_key(key))
