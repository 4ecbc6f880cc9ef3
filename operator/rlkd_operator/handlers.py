"""kopf glue: watch RLKDJobs and their children, and on every event (and on each poll) gather
what exists, call the pure `decide`, and apply its answer."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client

from rlkd.k8s import OperatorDefaults
from rlkd.k8s.naming import JOB_LABEL
from rlkd.k8s.store_secret import build_store_secret, copied_secret
from rlkd.spec.resource import RLKDJob
from rlkd_operator import settings as operator_settings
from rlkd_operator.decide import (
    FINISHED,
    ApplyFailure,
    ChildKey,
    Decision,
    Observed,
    contains,
    current_status,
    decide,
    needs,
    needs_poll,
    resolve,
)
from rlkd_operator.kube import (
    ApplyError,
    Kube,
    connection_info,
    controlled,
    merge_patch,
    unanswered,
)
from rlkd_operator.metrics import Metrics
from rlkd_operator.resources import CHILDREN, RLKDJOBS, SECRETS
from rlkd_operator.stores import Stores
from rlkd_operator.world import JobKey, World, retry_delay

logger = logging.getLogger("rlkd.operator")
STUCK_POLLS = 10
"""/healthz fails when the poller has not finished a pass for this many poll intervals."""
STUCK_MIN_SECONDS = 300.0
"""... and for at least this long. A pass only starts reconciles (poll), so one that does not
finish means the poller or the event loop itself is stuck, never a slow store."""


@dataclass
class Liveness:
    """Event-loop times of the start, the poller's last finished pass and the last successful
    reconcile: what /healthz reports. One object shared by every copy of the memo."""

    started: float = 0.0
    polled: float | None = None
    reconciled: float | None = None


def stuck(liveness: Liveness, now: float, poll_seconds: float) -> str | None:
    """Why the operator looks stuck (the poller has not finished a pass for long), or None."""
    since = now - (liveness.started if liveness.polled is None else liveness.polled)
    limit = max(STUCK_POLLS * poll_seconds, STUCK_MIN_SECONDS)
    if since > limit:
        return f"the poller has not finished a pass for {since:.0f} s (limit {limit:.0f} s)"
    return None


@dataclass
class Runtime:
    """Everything the handlers share (kopf's `memo`; resource handlers get shallow copies, so
    every field is a shared object or set once at startup)."""

    defaults: OperatorDefaults
    options: operator_settings.Options
    configuration: client.Configuration
    kube: Kube
    stores: Stores
    world: World
    metrics: Metrics
    poller: asyncio.Task[None] | None = None
    liveness: Liveness = field(default_factory=Liveness)


@kopf.on.login()
def login(memo: Runtime, **_: Any) -> kopf.ConnectionInfo:
    return connection_info(memo.configuration)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Runtime, **_: Any) -> None:
    operator_settings.configure(settings, memo.options)
    memo.liveness.started = asyncio.get_running_loop().time()
    memo.poller = asyncio.create_task(poll(memo))


@kopf.on.probe(id="operator")
async def health(memo: Runtime, **_: Any) -> dict[str, float | None]:
    """/healthz: fails (HTTP 500, so Kubernetes restarts the pod) when the poller died or is
    stuck; else reports the seconds since its last pass and since the last good reconcile. A
    permanent error: kopf would retry a temporary one inside the probe request."""
    now = asyncio.get_running_loop().time()
    if memo.poller is None or memo.poller.done():
        raise kopf.PermanentError("the poller is not running")
    if (problem := stuck(memo.liveness, now, memo.options.poll_seconds)) is not None:
        raise kopf.PermanentError(problem)
    polled, reconciled = memo.liveness.polled, memo.liveness.reconciled
    return {
        "secondsSincePoll": None if polled is None else round(now - polled, 1),
        "secondsSinceReconcile": None if reconciled is None else round(now - reconciled, 1),
    }


@kopf.on.cleanup()
async def cleanup(memo: Runtime, **_: Any) -> None:
    if memo.poller is not None:
        memo.poller.cancel()
    memo.stores.close()


@kopf.on.event(RLKDJOBS.group, RLKDJOBS.version, RLKDJOBS.plural)
async def job_event(event: kopf.RawEvent, memo: Runtime, **_: Any) -> None:
    if event["type"] == "DELETED":
        key = (event["object"]["metadata"]["namespace"], event["object"]["metadata"]["name"])
        memo.world.forget_job(key)
        memo.stores.forget(*key)
        return
    await reconcile(memo, memo.world.see_job(event["object"]))


def seen_child(body: kopf.Body, memo: Runtime, **_: Any) -> None:
    """Record a child. Registered as a kopf index only for its guarantee: no handler runs before
    every indexed kind is listed, so a restarted operator never takes a child for missing."""
    memo.world.see_child(body)


async def child_event(event: kopf.RawEvent, memo: Runtime, **_: Any) -> None:
    """A child changed (e.g. a Deployment became Available): reconcile its RLKDJob."""
    key = memo.world.see_child(event["object"], deleted=event["type"] == "DELETED")
    if key in memo.world.jobs:
        await reconcile(memo, key)


for _child in CHILDREN.values():
    _owned = {JOB_LABEL: kopf.PRESENT}
    kopf.index(_child.group, _child.version, _child.plural, id=_child.plural, labels=_owned)(
        seen_child
    )
    kopf.on.event(_child.group, _child.version, _child.plural, labels=_owned)(child_event)


async def poll(memo: Runtime) -> None:
    """Re-reconcile what no event will wake: progress in the store, failed reconciles (with
    backoff), ttl. Each reconcile runs in a task of its own, and a pass only starts them: a job
    whose store hangs holds up no other job and no later pass (it is skipped while still at it),
    so /healthz never fails for a slow store."""
    loop = asyncio.get_running_loop()
    running: dict[JobKey, asyncio.Task[None]] = {}
    try:
        for passes in itertools.count(1):
            await asyncio.sleep(memo.options.poll_seconds)
            running = {key: task for key, task in running.items() if not task.done()}
            resynced = await resync(memo) if passes % memo.options.resync_polls == 0 else set()
            for key, body in list(memo.world.jobs.items()):
                failed = memo.world.failures.get(key)
                due = (failed is not None and loop.time() >= failed[1]) or needs_poll(body)
                if (due or key in resynced) and key not in running:
                    running[key] = asyncio.create_task(reconcile(memo, key))
            memo.liveness.polled = loop.time()
    finally:
        for task in running.values():
            task.cancel()


async def resync(memo: Runtime) -> set[JobKey]:
    """A full LIST of RLKDJobs and their children in every watched namespace, made the world's
    truth (World.resync): what a relisted watch missed is dropped or refreshed. Returns the jobs
    to reconcile. A failed LIST is logged and waits for the next resync."""
    before = memo.world.snapshot()
    options = memo.options
    scopes = (None,) if options.clusterwide else options.namespaces
    jobs: list[dict[str, Any]] = []
    children: list[dict[str, Any]] = []
    try:
        for namespace in scopes:
            jobs += await memo.kube.list_objects(RLKDJOBS, namespace)
            for api in CHILDREN.values():
                children += await memo.kube.list_objects(api, namespace, JOB_LABEL)
    except Exception as exc:  # an API error or no connection: the poller must live on
        logger.warning("resync: listing failed (%s); trying again at the next resync", exc)
        memo.metrics.errors.inc()
        return set()
    gone, changed = memo.world.resync(before, jobs, children)
    for key in gone:
        memo.stores.forget(*key)
        logger.info("RLKDJob %s/%s is gone (found by resync)", *key)
    return changed


async def reconcile(memo: Runtime, key: JobKey) -> None:
    """Gather, decide, apply. Never raises: a failure is logged, counted and retried by poll."""
    async with memo.world.lock(key):
        body = memo.world.jobs.get(key)
        if body is None:
            return
        try:
            await _reconcile(memo, key, body)
            memo.world.failures.pop(key, None)
            memo.liveness.reconciled = asyncio.get_running_loop().time()
        except Exception as exc:
            count = memo.world.failures.get(key, (0, 0.0))[0] + 1
            delay = retry_delay(count, memo.options.poll_seconds)
            memo.world.failures[key] = (count, asyncio.get_running_loop().time() + delay)
            if isinstance(exc, ApplyError):  # reported in the job's status
                logger.warning("RLKDJob %s/%s: %s; retrying in %g s", *key, exc, delay)
            elif unanswered(exc):
                logger.warning(
                    "RLKDJob %s/%s: the API server did not answer (%s); retrying in %g s",
                    *key,
                    _first_line(exc),
                    delay,
                )
            else:
                logger.exception("reconciling RLKDJob %s/%s failed; retrying in %g s", *key, delay)
            memo.metrics.errors.inc()
        memo.metrics.reconciles.inc()


async def _reconcile(memo: Runtime, key: JobKey, body: dict[str, Any]) -> None:
    children = memo.world.children(key)
    job = resolve(body, memo.defaults)  # the spec, parsed once for this reconcile
    need = needs(body, children, broken=not isinstance(job, RLKDJob))
    workload = None
    if need.workload:  # a queued learner: Kueue's Workload, found by the learner's uid
        workload = await memo.kube.workload_of(children[("PyTorchJob", key[1])])
    observed = Observed(children=children, workload=workload)
    copied = None  # the copy of the default store's Secret, before any pod that reads it
    if isinstance(job, RLKDJob) and current_status(body).phase not in FINISHED:
        copied = await copy_store_secret(memo, job)
    if isinstance(job, RLKDJob):  # else decide reports the spec's problems
        seen = await memo.stores.observe(job, need)
        prepared = await memo.stores.prepared(job) if need.prepared else None
        stores = memo.stores
        build = await stores.gsrm_build(job, need.build_reports) if need.gsrm_build else None
        observed = Observed(
            children,
            seen.check,
            seen.progress,
            seen.model_present,
            workload=workload,
            prepared=prepared,
            progress_read=seen.progress_read,
            gsrm_build=build,
            failure=copied,
        )
    decision = decide(body, job, observed, memo.defaults, datetime.now(UTC))
    failure = copied
    if copied is None and (failure := await _apply(memo, decision, children)) is not None:
        # Decide again, knowing: the status says what failed and how to fix it.
        observed = replace(observed, failure=failure)
        decision = decide(body, job, observed, memo.defaults, datetime.now(UTC))
    if decision.status != body.get("status"):
        patch = merge_patch(body.get("status") or {}, decision.status)
        memo.world.see_job(await memo.kube.patch_status(*key, patch))
    for event in decision.events:
        await memo.kube.post_event(body, event.type, event.reason, event.message)
        if event.reason == "Stalled":
            memo.metrics.stalls.labels(*key).inc()
    if decision.restart is not None:  # after the status that counts the restart
        deleted = await memo.kube.delete_learner_pods(key[0], decision.restart)
        logger.warning("RLKDJob %s/%s stalled: deleted learner pods %s", *key, ", ".join(deleted))
    if decision.delete:
        await memo.kube.delete_job(*key)
    if failure is not None and not failure.permanent:
        raise ApplyError(failure)  # retried with backoff


async def copy_store_secret(memo: Runtime, job: RLKDJob) -> ApplyFailure | None:
    """Keep the job's copy of the default store's Secret equal to its source (one read of each;
    a write only when they differ); what the API server would not take, for the status. A
    Secret of that name that this job does not control is never written (NameConflict), and a
    missing source is left to the store check to report."""
    if (source := copied_secret(job, memo.defaults)) is None:
        return None
    data = await memo.kube.get(SECRETS, source.namespace, source.name)
    if data is None:
        return None
    manifest = build_store_secret(job, source, data.get("data"))
    meta = manifest["metadata"]
    live = await memo.kube.get(SECRETS, meta["namespace"], meta["name"])
    if live is not None and contains(live, manifest):
        return None
    try:
        # Patched in place only when it is this job's own; anything else goes through create,
        # whose conflict checks who controls the name.
        await memo.kube.apply(manifest, exists=live is not None and controlled(live, manifest))
    except ApplyError as exc:
        return exc.failure
    logger.info("RLKDJob %s/%s: copied Secret %s", meta["namespace"], job.metadata.name, source)
    return None


async def _apply(
    memo: Runtime, decision: Decision, children: Mapping[ChildKey, Any]
) -> ApplyFailure | None:
    """Apply in order (what pods mount and call first), then patch; a child the API server will
    not take stops the rest, and is returned."""
    try:
        for manifest in decision.apply:
            exists = (manifest["kind"], manifest["metadata"]["name"]) in children
            memo.world.see_child(await memo.kube.apply(manifest, exists))
        for patch in decision.patch:
            if (live := await memo.kube.patch_child(patch)) is not None:
                memo.world.see_child(live)
    except ApplyError as exc:
        return exc.failure
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
