"""What the operator reads from a job's artifact store: the provisioning check (reachable, bucket,
dataset), the learner's progress document, prepare.json, and a GSRM build's progress, model and
reports (rlkd_operator.gsrm_build). The store is not watchable, so these are reads on
demand (rlkd_operator.decide.needs says when); the S3 SDK is synchronous, so they run in threads.

Every read is bounded, so a hung store cannot hold a reconcile for long: each request is a
single try that waits at most `timeout` to connect and `timeout` for each read of the answer;
reads run in a pool of STORE_READERS threads of which one endpoint gets at most half, so a dead
endpoint never takes them all; and an endpoint that did not answer is not asked again for
`retry_after` seconds (its reads fail at once with the same message), so the many jobs of one
dead store cost one timeout, not one each.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, ParamSpec, TypeVar

import urllib3
from pydantic import ValidationError

from rlkd.errors import ObjectNotFoundError, StoreError, StoreUnreachableError
from rlkd.k8s.defaults import STORAGE_ENV, OperatorDefaults
from rlkd.k8s.resolve import model_uri, storage_of
from rlkd.k8s.store_secret import SecretRef, credentials_secret
from rlkd.spec.job import StorageSpec
from rlkd.spec.progress import (
    ANNOTATE_KEY,
    GSRM_BUILD_PREFIX,
    GSRM_EVALUATION_KEY,
    MODEL_PREFIX,
    PREPARE_KEY,
    PROGRESS_KEY,
    AnnotateSummary,
    GSRMEvaluation,
    PrepareSummary,
    ProgressDocument,
    run_prefix,
)
from rlkd.spec.refs import S3_SCHEME
from rlkd.spec.resource import RLKDJob, namespace_of
from rlkd.store import Credentials, S3Config, S3Store
from rlkd.store.base import StoreBase, SubStore
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR
from rlkd.store.models import model_stored
from rlkd.store.s3 import http_client
from rlkd_operator.decide import Needs, StoreCheck
from rlkd_operator.gsrm_build import GSRMBuildSeen

logger = logging.getLogger("rlkd.operator")
P = ParamSpec("P")
T = TypeVar("T")

STORE_READERS = 16
"""Store reads in flight at once, over every job (threads: the S3 SDK is synchronous)."""

SecretCredentials = Callable[[SecretRef, str], Awaitable[Credentials]]
"""(the Secret, what it is for a message) -> the key pair in it, read as the job's pods read it."""


class Observation(NamedTuple):
    """What one look at a job's store found. `progress_read`: the progress document was read
    (so `progress` None means there is none yet, not that the store could not be reached)."""

    check: StoreCheck | None = None
    progress: ProgressDocument | None = None
    model_present: bool = False
    progress_read: bool = False


class Stores:
    """Opens each job's store once and keeps it; a failed read drops it, so fixed credentials
    or a recreated bucket are picked up on the next try.

    The operator reaches a job's store with the job's own credentialsSecret, the keys its pods
    get, never with keys of its own: a check that passes is one the pods would pass too (for a
    job on the default store, the Secret its copy is made from)."""

    def __init__(
        self,
        secret_credentials: SecretCredentials,
        defaults: OperatorDefaults,
        *,
        timeout: float,
        retry_after: float,
        readers: int = STORE_READERS,
    ) -> None:
        self._secret_credentials = secret_credentials
        self._defaults = defaults
        self._http = http_client(connect=timeout, read=timeout, retries=False)
        self._pool = ThreadPoolExecutor(readers, thread_name_prefix="rlkd-store")
        self._share = max(1, readers // 2)
        self._gates: dict[str, asyncio.Semaphore] = {}
        self._retry_after = retry_after
        self._down: dict[str, tuple[float, str]] = {}
        """Endpoints that did not answer: (event-loop time to try again, what went wrong)."""
        self._open: dict[tuple[str, str], tuple[StorageSpec, S3Store]] = {}

    async def observe(self, job: RLKDJob, wants: Needs) -> Observation:
        """The store check, the progress document and whether the final model is there, as far
        as `wants` asks."""
        if not (wants.store_check or wants.progress):
            return Observation()
        storage = storage_of(job)
        if (secret := credentials_secret(job, self._defaults)) is None:
            return Observation(check=_no_credentials(job) if wants.store_check else None)
        try:
            store = await self._store(job, storage, secret)
            check = (
                await self._read(storage.endpoint, _check, store, job, self._http)
                if wants.store_check
                else None
            )
            if not wants.progress:
                return Observation(check=check)
            doc, model = await self._read(storage.endpoint, _progress, store)
            return Observation(check, doc, model, progress_read=True)
        except StoreError as exc:
            self._failed(job, exc)
            # The progress of a running job stays as last read; only a check reports the error.
            reason = "BucketMissing" if isinstance(exc, ObjectNotFoundError) else "StoreUnavailable"
            failed = StoreCheck(False, reason, str(exc))
            return Observation(check=failed if wants.store_check else None)

    async def prepared(self, job: RLKDJob) -> PrepareSummary | None:
        """The job's prepare.json, read as boundedly as the progress document; None when it is
        absent or cannot be read (a failed prepare is then reported without its counts)."""
        return await self._job_read(job, _prepared)

    async def gsrm_build(self, job: RLKDJob, reports: bool) -> GSRMBuildSeen | None:
        """The job's GSRM build: its progress document (below gsrm-build/), whether gsrm.model
        holds the built model (once the progress says finished), and with `reports` the
        annotate.json and evaluation.json a failure message quotes. None when the store could
        not be read: the build is then neither taken for done nor started."""
        return await self._job_read(job, _gsrm_build, job, reports, self._http)

    async def _job_read(self, job: RLKDJob, read: Callable[..., T], *args: Any) -> T | None:
        """`read(store, *args)` on the job's run store, or None when it cannot be read (logged;
        the store is opened again next time)."""
        storage = storage_of(job)
        if (secret := credentials_secret(job, self._defaults)) is None:
            return None
        try:
            store = await self._store(job, storage, secret)
            return await self._read(storage.endpoint, read, store, *args)
        except StoreError as exc:
            self._failed(job, exc)
            return None

    def _failed(self, job: RLKDJob, exc: StoreError) -> None:
        """A read of the job's store failed: logged (a warning when the store was asked, so one
        per try, not one per read it refused meanwhile; never a secret), and the store is opened
        again next time."""
        log = logger.debug if isinstance(exc, _StillDown) else logger.warning
        log("store of RLKDJob %s/%s: %s", *_key(job), exc)
        self._open.pop(_key(job), None)

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted job's store."""
        self._open.pop((namespace, name), None)

    def close(self) -> None:
        """Stop the reader threads (those blocked on a store end with their timeout)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _store(self, job: RLKDJob, storage: StorageSpec, secret: SecretRef) -> S3Store:
        known = self._open.get(_key(job))
        if known is not None and known[0] == storage:
            return known[1]
        what = (
            f"the default store's Secret, {STORAGE_ENV['credentials_secret']}"
            if secret.namespace != namespace_of(job) or secret.name != storage.credentials_secret
            else "spec.storage.credentialsSecret"
        )
        credentials = await self._secret_credentials(secret, what)
        run = run_prefix(storage.prefix, namespace_of(job), job.metadata.name)
        settings = S3Config.of(storage, credentials, bucket=storage.bucket, prefix=run)
        # Opening the store creates the bucket when it is missing.
        store = await self._read(storage.endpoint, S3Store, settings, http=self._http)
        self._open[_key(job)] = (storage, store)
        return store

    async def _read(
        self, endpoint: str, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`read(*args, **kwargs)` in the pool, at most half of it per endpoint; at once
        StoreUnreachableError while `endpoint` is known not to answer."""
        loop = asyncio.get_running_loop()
        gate = self._gates.setdefault(endpoint, asyncio.Semaphore(self._share))
        self._refuse_if_down(endpoint, loop.time())
        async with gate:
            self._refuse_if_down(endpoint, loop.time())  # found down while this one waited
            call = functools.partial(read, *args, **kwargs)
            try:
                result = await loop.run_in_executor(self._pool, call)
            except StoreUnreachableError as exc:
                self._down[endpoint] = (loop.time() + self._retry_after, str(exc))
                raise
        self._down.pop(endpoint, None)
        return result

    def _refuse_if_down(self, endpoint: str, now: float) -> None:
        down = self._down.get(endpoint)
        if down is not None and now < down[0]:
            raise _StillDown(down[1])


class _StillDown(StoreUnreachableError):
    """A read refused without asking: the endpoint did not answer a moment ago."""


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


def _check(store: S3Store, job: RLKDJob, http: urllib3.PoolManager) -> StoreCheck:
    """The store answered and its bucket exists (opening it made sure); now the dataset."""
    uri = model_uri(job.spec.dataset.uri, storage_of(job))
    if not uri.startswith(S3_SCHEME):  # a hub id or a path in the image: nothing to check here
        return StoreCheck(True, "Ready", f"store {store.config.uri} is reachable")
    config = store.config
    if not _present(store, job, uri, http):
        return StoreCheck(
            False,
            "DatasetMissing",
            f"no dataset at {uri} (spec.dataset.uri); upload it there or fix the URI",
        )
    return StoreCheck(True, "Ready", f"store {config.uri} is reachable and the dataset is at {uri}")


def _present(store: S3Store, job: RLKDJob, uri: str, http: urllib3.PoolManager) -> bool:
    """Whether the s3:// `uri` names an object, or a folder that holds one, in the job's store."""
    other, key = _bucket_of(store, job, uri, http)
    return other.exists(key.rstrip("/")) or bool(other.list(key.rstrip("/") + "/"))


def _bucket_of(
    store: S3Store, job: RLKDJob, uri: str, http: urllib3.PoolManager
) -> tuple[S3Store, str]:
    """The bucket of the s3:// `uri` opened with the job's keys (it may be another than the
    run's), and the key `uri` names in it."""
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    other = S3Store(
        S3Config.of(storage_of(job), store.config.credentials, bucket=bucket, prefix=""),
        create_bucket=False,
        http=http,
    )
    return other, key


def _document(store: StoreBase) -> ProgressDocument | None:
    """The progress document at `store`'s PROGRESS_KEY; None when there is none yet."""
    try:
        raw: Any = store.get_json(PROGRESS_KEY)
    except ObjectNotFoundError:
        return None
    try:
        return ProgressDocument.model_validate(raw, by_name=False)
    except ValidationError as exc:
        where = store.uri_for(PROGRESS_KEY)
        first = exc.errors()[0]
        at = ".".join(str(part) for part in first["loc"]) or "the document"
        raise StoreError(
            f"{where} is not a progress document ({exc.error_count()} errors; {at}: "
            f"{first['msg']}): are the learner's and the operator's versions the same?"
        ) from None


def _progress(store: S3Store) -> tuple[ProgressDocument | None, bool]:
    doc = _document(store)
    return doc, doc is not None and doc.stage == "finished" and model_stored(store, MODEL_PREFIX)


def _gsrm_build(
    store: S3Store, job: RLKDJob, reports: bool, http: urllib3.PoolManager
) -> GSRMBuildSeen:
    build = SubStore(store, GSRM_BUILD_PREFIX)
    doc = _document(build)
    model = job.spec.gsrm.model if job.spec.gsrm is not None else None
    finished = doc is not None and doc.stage == "finished" and model is not None
    try:
        present = finished and model_stored(
            *_bucket_of(store, job, model_uri(model or "", storage_of(job)), http)
        )
    except ObjectNotFoundError:  # gsrm.model names a bucket that does not exist (yet)
        present = False
    if not reports:
        return GSRMBuildSeen(doc, present)
    return GSRMBuildSeen(
        doc,
        present,
        _report(build, ANNOTATE_KEY, AnnotateSummary),
        _report(build, GSRM_EVALUATION_KEY, GSRMEvaluation),
    )


Report = TypeVar("Report", AnnotateSummary, GSRMEvaluation)


def _report(store: StoreBase, key: str, model: type[Report]) -> Report | None:
    """A build command's report; None when absent or not one (the failure is then reported
    without its numbers, and the reason is logged)."""
    try:
        return model.model_validate(store.get_json(key), by_name=False)
    except ObjectNotFoundError:
        return None
    except (StoreError, ValidationError) as exc:
        logger.warning("%s is not a %s report: %s", store.uri_for(key), model.__name__, exc)
        return None


def _prepared(store: S3Store) -> PrepareSummary | None:
    try:
        raw: Any = store.get_json(PREPARE_KEY)
    except ObjectNotFoundError:
        return None
    try:
        return PrepareSummary.model_validate(raw, by_name=False)
    except ValidationError as exc:
        where = store.uri_for(PREPARE_KEY)
        raise StoreError(f"{where} is not a prepare summary ({exc.error_count()} errors)") from None
