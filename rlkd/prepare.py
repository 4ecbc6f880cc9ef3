"""The prepare phase (`rlkd prepare`): the teacher side of the structure reward decomposed and
cached in the job's store before training, so the learner's steps wait for no teacher
decomposition, and a GSRM that cannot serve shows up before GPU hours go to the learner.

It writes exactly the entries the learner's `TeacherCache` reads (same store, same keys).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rlkd.data import BucketOpener, examples, read_records, select
from rlkd.errors import SpecError
from rlkd.gsrm.engine import TeacherCache, precompute_teachers
from rlkd.gsrm.loop import run_sync
from rlkd.gsrm.types import Decomposer, DecomposeRequest
from rlkd.k8s.naming import namespace_of
from rlkd.spec.progress import run_prefix
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import STORE_SECRET_DIR
from rlkd.store import Credentials, LocalStore, S3Config, S3Store, Store


@dataclass(frozen=True)
class JobStores:
    """The stores one job reads and writes."""

    shared: Store
    """At storage.prefix: where store:// references point."""
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
    """The job's S3 store, with the key pair from the mounted storage Secret (in a pod) or the
    environment."""
    storage = job.spec.storage
    if storage is None:
        raise SpecError(
            ["spec.storage: is empty: set it, or use a local store (rlkd prepare --store-dir DIR)"]
        )
    credentials = Credentials.from_env(env, STORE_SECRET_DIR)
    run = run_prefix(storage.prefix, namespace_of(job), job.metadata.name)
    return JobStores(
        shared=S3Store(
            S3Config.of(storage, credentials, bucket=storage.bucket, prefix=storage.prefix)
        ),
        run=S3Store(S3Config.of(storage, credentials, bucket=storage.bucket, prefix=run)),
        open_bucket=lambda bucket: S3Store(
            S3Config.of(storage, credentials, bucket=bucket, prefix=""), create_bucket=False
        ),
    )


def nothing_to_prepare(job: RLKDJob) -> str | None:
    """Why the job has no teacher decompositions to compute, or None when it has some."""
    spec = job.spec
    if spec.rewards.structure == 0:
        return "rewards.structure is 0"
    if spec.teacher.source == "decompositions":
        return "teacher.source is decompositions: the dataset carries them"
    if spec.teacher.source == "model":
        return "teacher.source is model: the teacher's paths are sampled during training"
    return None


def prepare_teachers(
    job: RLKDJob, stores: JobStores, decomposer: Decomposer, *, batch_size: int = 64
) -> tuple[int, dict[str, int]]:
    """Decompose and cache the teacher reasoning of every example training will use; returns
    (examples, failures by reason). Cached entries are not computed again."""
    dataset = job.spec.dataset
    records = read_records(
        dataset.uri, store=stores.shared, open_bucket=stores.open_bucket, split=dataset.split
    )
    requests = [
        DecomposeRequest(e.teacher, e.problem, e.domain)
        for e in examples(select(records, dataset), job.spec)
    ]
    cache = TeacherCache(decomposer, stores.run)
    return len(requests), run_sync(precompute_teachers(cache, requests, batch_size=batch_size))
