"""S3 settings and credentials: pure data and checks, no S3 client, so settings can be
checked without importing minio."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rlkd.errors import StoreError
from rlkd.spec.job import StorageSpec
from rlkd.spec.refs import s3_bucket_problems

# Defined with the other pod variables; re-exported for the store's callers.
from rlkd.spec.runtime import ACCESS_KEY_VAR as ACCESS_KEY_VAR
from rlkd.spec.runtime import SECRET_KEY_VAR as SECRET_KEY_VAR
from rlkd.store.base import key_problem


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """Split an endpoint URL into minio's (host[:port], secure) pair."""
    hint = f"S3 endpoint {endpoint!r} is not a URL like http://host:port or https://host"
    parts = urlsplit(endpoint)
    try:
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError as exc:
        raise StoreError(f"{hint}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"{hint}: it needs an http:// or https:// scheme and a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise StoreError(f"{hint}: drop everything after the host and port")
    return parts.netloc, parts.scheme == "https"


@dataclass(frozen=True)
class Credentials:
    """An S3 key pair. The secret never appears in repr, logs or error messages."""

    access_key: str
    secret_key: str = field(repr=False)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, secret_dir: str | Path | None = None
    ) -> Credentials:
        """Read the key pair from a mounted Secret (one file per variable) when `secret_dir`
        exists, else from the environment; in-cluster and local runs share one code path."""
        source = "the environment"
        values = {name: env.get(name, "") for name in (ACCESS_KEY_VAR, SECRET_KEY_VAR)}
        if secret_dir is not None and Path(secret_dir).is_dir():
            source = f"the Secret mounted at {secret_dir}"
            for name in values:
                file = Path(secret_dir, name)
                values[name] = file.read_text().strip() if file.is_file() else ""
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise StoreError(
                f"no S3 credentials: {' and '.join(missing)} not set in {source}; set "
                f"{ACCESS_KEY_VAR} and {SECRET_KEY_VAR} (as environment variables, or as keys "
                "of the storage Secret)"
            )
        return cls(values[ACCESS_KEY_VAR], values[SECRET_KEY_VAR])


@dataclass(frozen=True, kw_only=True)
class S3Config:
    """Where an S3Store keeps its objects: `s3://bucket/prefix` on `endpoint`."""

    endpoint: str
    bucket: str
    prefix: str = ""
    region: str | None = None
    credentials: Credentials

    def __post_init__(self) -> None:
        parse_endpoint(self.endpoint)
        problems = [f"bucket {self.bucket!r} {p}" for p in s3_bucket_problems(self.bucket)]
        prefix_problem = key_problem(self.prefix.removesuffix("/")) if self.prefix else None
        if prefix_problem:
            problems.append(f"prefix {self.prefix!r}: {prefix_problem}")
        if problems:
            raise StoreError(f"invalid S3 settings: {'; '.join(problems)}")

    @property
    def key_prefix(self) -> str:
        """The prefix as prepended to object names: '' or ending in exactly one '/'."""
        return self.prefix.removesuffix("/") + "/" if self.prefix else ""

    @property
    def uri(self) -> str:
        """`s3://bucket` or `s3://bucket/prefix`, without a trailing slash."""
        return f"s3://{self.bucket}/{self.key_prefix}".removesuffix("/")

    @classmethod
    def of(
        cls, storage: StorageSpec, credentials: Credentials, *, bucket: str, prefix: str
    ) -> S3Config:
        """Settings for `prefix` in `bucket` on a job's store (spec.storage or the operator's
        default): the same endpoint and region, with this key pair."""
        return cls(
            endpoint=storage.endpoint,
            bucket=bucket,
            prefix=prefix,
            region=storage.region,
            credentials=credentials,
        )
