"""A Store in a local directory: the embedded default for `rlkd run` on one machine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlkd.errors import ObjectNotFoundError, StoreError
from rlkd.store.base import (
    TMP_SUFFIX,
    StoreBase,
    atomic_output,
    os_error_message,
    validate_prefix,
)

_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


class LocalStore(StoreBase):
    """Objects are files under `root`; every write goes through a temp file and a rename."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        with self._errors(self.root.as_uri()):
            self.root.mkdir(parents=True, exist_ok=True)
        self.uri = self.root.as_uri()

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(self.uri_for(key)), atomic_output(self._target(key)) as out:
            out.write(data)

    def get_bytes(self, key: str) -> bytes:
        with self._errors(self.uri_for(key), reading=True):
            return self._path(key).read_bytes()

    def put_file(self, key: str, path: str | Path) -> None:
        with (
            self._errors(self.uri_for(key)),
            open(path, "rb") as src,
            atomic_output(self._target(key)) as out,
        ):
            shutil.copyfileobj(src, out)

    def get_file(self, key: str, path: str | Path) -> None:
        with self._errors(self.uri_for(key), reading=True):
            src = open(self._path(key), "rb")  # noqa: SIM115 -- closed by the next block
        with src, self._errors(self.uri_for(key)), atomic_output(Path(path)) as out:
            shutil.copyfileobj(src, out)

    def list(self, prefix: str = "") -> list[str]:
        # Walk only the deepest directory the prefix names, then filter as S3 does.
        top = self.root / validate_prefix(prefix).rpartition("/")[0]
        keys = []
        for dirpath, _, filenames in os.walk(top):
            base = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if base == "." else f"{base}/{name}"
                if key.startswith(prefix) and not name.endswith(TMP_SUFFIX):
                    keys.append(key)
        return sorted(keys)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._errors(self.uri_for(key)):
            if not path.is_dir():
                path.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        """The file for a validated `key`; refuses symlinks that lead outside the root."""
        uri = self.uri_for(key)
        path = self.root / key
        if not path.resolve().is_relative_to(self.root):
            raise StoreError(f"{uri} resolves outside the store root {self.root}; remove the link")
        return path

    def _target(self, key: str) -> Path:
        """The file a write of `key` goes to. Files cannot also be directories, so a local store
        cannot hold both `a` and `a/b` (S3 can): say so rather than fail on the file system."""
        path = self._path(key)
        inside = path.relative_to(self.root).parents  # only the key's own directories
        clash = next((self.root / p for p in inside if (self.root / p).is_file()), None)
        if path.is_dir() or clash is not None:
            other = (
                f"keys below {key!r}"
                if clash is None
                else repr(clash.relative_to(self.root).as_posix())
            )
            raise StoreError(
                f"cannot write {self.uri_for(key)}: the store already holds {other}, and a local "
                "store cannot hold both an object and keys below it; choose another key"
            )
        return path

    @contextmanager
    def _errors(self, uri: str, *, reading: bool = False) -> Iterator[None]:
        """Turn OS errors into the store's error types, naming the object's URI."""
        try:
            yield
        except _MISSING as exc:
            if reading:
                raise ObjectNotFoundError(f"no object at {uri}") from exc
            raise StoreError(os_error_message(uri, exc)) from exc
        except OSError as exc:
            raise StoreError(os_error_message(uri, exc)) from exc
