"""Shared fixtures. Real parts run here: the S3 server starts once per session, on first use."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlkd.store import LocalStore, S3Config, Store
from rlkd.toy import build_tiny_model
from tests.s3server import S3Server, weed_s3_server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One `weed mini` S3 server on 127.0.0.1 for the whole session."""
    with weed_s3_server(tmp_path_factory.mktemp("s3server")) as server:
        yield server


@pytest.fixture
def s3_config(s3_server: S3Server) -> S3Config:
    """Settings for a bucket no other test uses (created by the store that opens it)."""
    return S3Config(
        endpoint=s3_server.endpoint,
        bucket=f"test-{uuid.uuid4().hex[:16]}",
        prefix="runs/job-1",
        credentials=s3_server.credentials,
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """A fresh, empty store of each backend, so one test body checks both behave alike.

    The S3 store uses the smallest part size S3 allows, so large-file tests do real
    multipart uploads.
    """
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    from rlkd.store.s3 import MIN_PART_SIZE, S3Store

    return S3Store(request.getfixturevalue("s3_config"), part_size=MIN_PART_SIZE)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen2 chat model built offline (rlkd.toy), once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")
