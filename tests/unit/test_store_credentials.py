"""Where a pod's `rlkd` command reads the store's key pair (rlkd.store.job.store_credentials)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlkd.errors import StoreError
from rlkd.spec.runtime import STORE_SECRET_DIR, STORE_SECRET_DIR_ENV
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR, Credentials
from rlkd.store.job import store_credentials

ENV_KEYS = {ACCESS_KEY_VAR: "env-id", SECRET_KEY_VAR: "env-key"}


def secret_dir(root: Path, access: str, secret: str) -> Path:
    root.mkdir()
    (root / ACCESS_KEY_VAR).write_text(access)
    (root / SECRET_KEY_VAR).write_text(secret + "\n")  # a mounted file may end in a newline
    return root


def test_the_override_names_where_the_secrets_files_are(tmp_path: Path) -> None:
    mounted = secret_dir(tmp_path / "store", "file-id", "file-key")
    env = {**ENV_KEYS, STORE_SECRET_DIR_ENV: str(mounted)}
    assert store_credentials(env) == Credentials("file-id", "file-key")


def test_without_the_override_or_the_mount_the_environment_holds_the_keys() -> None:
    assert not Path(STORE_SECRET_DIR).exists()  # not a pod: nothing mounted there
    assert store_credentials(ENV_KEYS) == Credentials("env-id", "env-key")


def test_an_override_without_the_keys_names_the_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match=f"the Secret mounted at {tmp_path / 'empty'}"):
        store_credentials({**ENV_KEYS, STORE_SECRET_DIR_ENV: str(tmp_path / "empty")})
