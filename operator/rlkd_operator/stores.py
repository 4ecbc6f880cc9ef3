"""What the operator reads from a job's artifact store: the provisioning check (reachable, bucket,
dataset) and the learner's progress document. The store is not watchable, so these are reads on
demand (rlkd_operator.decide.needs says when); the S3 SDK is synchronous, so they run in threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from rlkd.errors import ObjectNotFoundError, StoreError
from rlkd.k8s.defaults import STORAGE_ENV
from rlkd.k8s.naming import namespace_of
from rlkd.k8s.resolve import S3_SCHEME, model_uri, storage_of
from rlkd.spec.job import StorageSpec
from rlkd.spec.progress import MODEL_PREFIX, PROGRESS_KEY, ProgressDocument, run_prefix
from rlkd.spec.resource import RLKDJob
from rlkd.store import Credentials, S3Config, S3Store
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR
from rlkd_operator.decide import Needs, StoreCheck

logger = logging.getLogger("rlkd.operator")

SecretCredentials = Callable[[str, str], Awaitable[Credentials]]
"""(namespace, Secret name) -> the key pair in that Secret, read as the job's pods read it."""


class Stores:
    """Opens each job's store once and keeps it; a failed read drops it, so fixed credentials
    or a recreated bucket are picked up on the next try.

    The operator reaches a job's store with the job's own credentialsSecret, the keys its pods
    get, never with keys of its own: a check that passes is one the pods would pass too."""

    def __init__(self, secret_credentials: SecretCredentials) -> None:
        self._secret_credentials = secret_credentials
        self._open: dict[tuple[str, str], tuple[StorageSpec, S3Store]] = {}

    async def observe(
        self, job: RLKDJob, wants: Needs
    ) -> tuple[StoreCheck | None, ProgressDocument | None, bool]:
        """(store check, progress document, final model present) as far as `wants` asks."""
        if not (wants.store_check or wants.progress):
            return None, None, False
        secret = storage_of(job).credentials_secret
        if secret is None:
            return (_no_credentials(job) if wants.store_check else None), None, False
        try:
            store = await self._store(job, secret)
            check = await asyncio.to_thread(_check, store, job) if wants.store_check else None
            if not wants.progress:
                return check, None, False
            doc, model = await asyncio.to_thread(_progress, store)
            return check, doc, model
        except StoreError as exc:
            logger.warning("store of RLKDJob %s/%s: %s", *_key(job), exc)  # no secret in it
            self._open.pop(_key(job), None)
            # The progress of a running job stays as last read; only a check reports the error.
            reason = "BucketMissing" if isinstance(exc, ObjectNotFoundError) else "StoreUnavailable"
            failed = StoreCheck(False, reason, str(exc))
            return (failed if wants.store_check else None), None, False

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted job's store."""
        self._open.pop((namespace, name), None)

    async def _store(self, job: RLKDJob, secret: str) -> S3Store:
        storage = storage_of(job)
        known = self._open.get(_key(job))
        if known is not None and known[0] == storage:
            return known[1]
        credentials = await self._secret_credentials(namespace_of(job), secret)
        run = run_prefix(storage.prefix, namespace_of(job), job.metadata.name)
        settings = S3Config.of(storage, credentials, bucket=storage.bucket, prefix=run)
        store = await asyncio.to_thread(S3Store, settings)  # creates the bucket when missing
        self._open[_key(job)] = (storage, store)
        return store


def _key(job: RLKDJob) -> tuple[str, str]:
    return namespace_of(job), job.metadata.name


def _no_credentials(job: RLKDJob) -> StoreCheck:
    """Pods get store keys only from a Secret; workload identity (keys from the pods'
    ServiceAccount) is not supported: the learner's store client reads keys, nothing else."""
    return StoreCheck(
        False,
        "NoCredentials",
        f"spec.storage names no credentialsSecret, so the job's pods would have no keys for "
        f"{storage_of(job).endpoint}; create a Secret in namespace {namespace_of(job)} with keys "
        f"{ACCESS_KEY_VAR} and {SECRET_KEY_VAR} and name it in spec.storage.credentialsSecret (for "
        f"the operator's default store: {STORAGE_ENV['credentials_secret']}); cloud workload "
        "identity (keys from the pods' ServiceAccount) is not supported",
    )


def _check(store: S3Store, job: RLKDJob) -> StoreCheck:
    """The store answered and its bucket exists (opening it made sure); now the dataset."""
    uri = model_uri(job.spec.dataset.uri, storage_of(job))
    if not uri.startswith(S3_SCHEME):  # a hub id or a path in the image: nothing to check here
        return StoreCheck(True, "Ready", f"store {store.config.uri} is reachable")
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    config = store.config
    dataset_store = S3Store(
        S3Config.of(storage_of(job), config.credentials, bucket=bucket, prefix=""),
        create_bucket=False,
    )
    present = dataset_store.exists(key.rstrip("/")) or bool(
        dataset_store.list(key.rstrip("/") + "/")
    )
    if not present:
        return StoreCheck(
            False,
            "DatasetMissing",
            f"no dataset at {uri} (spec.dataset.uri); upload it there or fix the URI",
        )
    return StoreCheck(True, "Ready", f"store {config.uri} is reachable and the dataset is at {uri}")


def _progress(store: S3Store) -> tuple[ProgressDocument | None, bool]:
    try:
        raw: Any = store.get_json(PROGRESS_KEY)
    except ObjectNotFoundError:
        return None, False
    try:
        doc = ProgressDocument.model_validate(raw, by_name=False)
    except ValidationError as exc:
        where = store.uri_for(PROGRESS_KEY)
        raise StoreError(
            f"{where} is not a progress document ({exc.error_count()} errors)"
        ) from None
    return doc, doc.stage == "finished" and bool(store.list(MODEL_PREFIX))
