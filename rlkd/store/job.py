"""The stores one job reads and writes, found the way each command is started: a local
directory (`--store-dir`, `rlkd run`), the learner pod's environment contract (`RLKD_STORE_*`,
rlkd.spec.runtime), or the job's own `spec.storage`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rlkd.errors import SpecError
from rlkd.spec.progress import run_prefix
from rlkd.spec.resource import RLKDJob, namespace_of
from rlkd.spec.runtime import (
    STORE_BUCKET_ENV,
    STORE_ENDPOINT_ENV,
    STORE_PREFIX_ENV,
    STORE_REGION_ENV,
    STORE_SECRET_DIR,
    STORE_SECRET_DIR_ENV,
)
from rlkd.store.base import Store
from rlkd.store.config import Credentials, S3Config
from rlkd.store.local import LocalStore

BucketOpener = Callable[[str], Store]
"""bucket name -> a Store over that bucket (for s3:// references)."""


@dataclass(frozen=True)
class JobStores:
    """The stores one job reads and writes."""

    shared: Store
    """At storage.prefix: where store:// references point, and the toy domain's cache."""
    run: Store
    """The run's own prefix (rlkd.spec.progress.run_prefix): caches, checkpoints, progress."""
    open_bucket: BucketOpener | None
    """A store over another bucket of the same endpoint, for s3:// references."""


def local_stores(job: RLKDJob, root: str | Path) -> JobStores:
    """A local directory as the job's store (the embedded default): `root` stands for
    storage.prefix, and the run lives in `root/<namespace>/<name>`."""
    return JobStores(
        shared=LocalStore(root),
        run=LocalStore(Path(root, namespace_of(job), job.metadata.name)),
        open_bucket=None,
    )


def s3_stores(job: RLKDJob, env: Mapping[str, str] = os.environ) -> JobStores:
    """The job's S3 store. Endpoint, bucket and the run's prefix come from the learner pod's
    environment contract when it is set (the operator resolved the store, default store
    included), else from `spec.storage`; the key pair from the mounted storage Secret (in a pod:
    at STORE_SECRET_DIR, or where RLKD_STORE_SECRET_DIR says) or the environment."""
    storage = job.spec.storage
    if env.get(STORE_ENDPOINT_ENV):
        # The pod's contract wins; what it leaves out comes from spec.storage when there is one.
        namespace, name = namespace_of(job), job.metadata.name
        run = env.get(STORE_PREFIX_ENV, "").strip("/") or run_prefix(
            storage.prefix if storage else "", namespace, name
        ).strip("/")
        suffix = f"/{namespace}/{name}"
        shared = run.removesuffix(suffix) if run.endswith(suffix) else run
        endpoint = env[STORE_ENDPOINT_ENV]
        bucket = env.get(STORE_BUCKET_ENV) or (storage.bucket if storage else "")
        if not bucket:
            raise SpecError(
                [f"{STORE_BUCKET_ENV}: is not set (and spec.storage is empty): set the bucket"]
            )
        region = env.get(STORE_REGION_ENV) or (storage.region if storage else None)
    elif storage is not None:
        shared = storage.prefix
        run = run_prefix(storage.prefix, namespace_of(job), job.metadata.name)
        endpoint, bucket, region = storage.endpoint, storage.bucket, storage.region
    else:
        raise SpecError(
            [
                "spec.storage: is empty and RLKD_STORE_ENDPOINT is not set: name a store in "
                "spec.storage, or use a local one (--store-dir DIR)"
            ]
        )
    credentials = store_credentials(env)

    def config(bucket: str, prefix: str) -> S3Config:
        return S3Config(
            endpoint=endpoint,
            bucket=bucket,
            prefix=prefix,
            credentials=credentials,
            region=region,
        )

    from rlkd.store.s3 import S3Store

    return JobStores(
        shared=S3Store(config(bucket, shared)),
        run=S3Store(config(bucket, run)),
        open_bucket=lambda other: S3Store(config(other, ""), create_bucket=False),
    )


def store_credentials(env: Mapping[str, str] = os.environ) -> Credentials:
    """The store's key pair as a pod reads it: from the storage Secret's files at
    STORE_SECRET_DIR (or RLKD_STORE_SECRET_DIR) when they are mounted, else the environment."""
    return Credentials.from_env(env, env.get(STORE_SECRET_DIR_ENV) or STORE_SECRET_DIR)


def job_stores(
    job: RLKDJob, *, store_dir: str | Path | None = None, env: Mapping[str, str] = os.environ
) -> JobStores:
    """The stores a command uses: `store_dir` when given, else the job's S3 store."""
    if store_dir is not None:
        return local_stores(job, store_dir)
    return s3_stores(job, env)
