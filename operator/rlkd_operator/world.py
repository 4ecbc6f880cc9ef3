"""What the operator knows from its watch streams: every RLKDJob and its children, by name.

Reconciles read children from here instead of the API server, so a quiet job costs no requests;
the responses of the operator's own writes go in too, so the next reconcile never acts on a view
older than its own last write.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from rlkd.k8s.naming import JOB_LABEL
from rlkd_operator.decide import ChildKey

JobKey = tuple[str, str]
"""(namespace, name) of an RLKDJob."""
Snapshot = tuple[dict[JobKey, dict[str, Any]], dict[JobKey, dict[ChildKey, dict[str, Any]]]]
"""The world's jobs and children at one moment (World.snapshot)."""
MAX_RETRY_SECONDS = 600.0


def retry_delay(failures: int, base: float) -> float:
    """Seconds before retrying a job whose last `failures` reconciles failed: doubling from
    `base`, at most MAX_RETRY_SECONDS, so a job that keeps failing costs few requests."""
    return min(base * 2.0 ** (failures - 1), MAX_RETRY_SECONDS)


class World:
    """Job bodies and their children's bodies, with one lock per job so that reconciles of one
    job never interleave."""

    def __init__(self) -> None:
        self.jobs: dict[JobKey, dict[str, Any]] = {}
        self._children: defaultdict[JobKey, dict[ChildKey, dict[str, Any]]] = defaultdict(dict)
        self._locks: dict[JobKey, tuple[asyncio.Lock, int]] = {}
        """A lock per job with the reconciles that hold or wait for it; gone when none do."""
        self.failures: dict[JobKey, tuple[int, float]] = {}
        """Jobs whose last reconcile failed: (failures in a row, event-loop time of the next
        try). The poller retries them then (retry_delay)."""

    def see_job(self, body: Mapping[str, Any]) -> JobKey:
        key = _key(body)
        if _newer(body, self.jobs.get(key)):
            self.jobs[key] = _plain(body)
        return key

    def forget_job(self, key: JobKey) -> None:
        self.jobs.pop(key, None)
        self._children.pop(key, None)
        self.failures.pop(key, None)

    def see_child(self, body: Mapping[str, Any], deleted: bool = False) -> JobKey | None:
        """Record a child; the key of its RLKDJob (by the `rlkd.ai/job` label), if it has one."""
        if (key := _owner(body)) is None:
            return None
        child = _child(body)
        if deleted:  # without creating an entry for a job that is gone
            self._children.get(key, {}).pop(child, None)
        elif _newer(body, self._children[key].get(child)):
            self._children[key][child] = _plain(body)
        return key

    def snapshot(self) -> Snapshot:
        """What the world holds now, to pass to `resync` with a LIST answered after it."""
        return dict(self.jobs), {key: dict(kids) for key, kids in self._children.items()}

    def resync(
        self, before: Snapshot, jobs: list[dict[str, Any]], children: list[dict[str, Any]]
    ) -> tuple[set[JobKey], set[JobKey]]:
        """Make the world what full LISTs (sent after `before` was taken) say exists: a watch
        that was relisted may have missed DELETED (or any) events. Listed objects are seen
        (newer ones win); an object absent from the lists is dropped, unless an event or one
        of our own writes replaced it since `before`: then it is newer than the lists. Returns
        the jobs that are gone and the jobs whose children changed (to reconcile)."""
        old_jobs, old_children = before
        listed = {_key(body) for body in jobs}
        gone = {k for k in old_jobs if k not in listed and self.jobs.get(k) is old_jobs[k]}
        for key in gone:
            self.forget_job(key)
        changed: set[JobKey] = set()
        for body in jobs:
            if _version(self.jobs.get(_key(body))) != _version(body):
                changed.add(self.see_job(body))
        seen: set[tuple[JobKey, ChildKey]] = set()
        for body in children:
            if (owner := _owner(body)) is None:
                continue
            if _version(self._children.get(owner, {}).get(_child(body))) != _version(body):
                changed.add(owner)
            self.see_child(body)
            seen.add((owner, _child(body)))
        for owner, kids in old_children.items():
            for child, body in kids.items():
                if (owner, child) not in seen and self._children.get(owner, {}).get(child) is body:
                    self.see_child(body, deleted=True)
                    changed.add(owner)
        for owner in [k for k, kids in self._children.items() if not kids]:
            del self._children[owner]  # nothing left of a job that is gone
        return gone, changed - gone

    def children(self, key: JobKey) -> dict[ChildKey, dict[str, Any]]:
        return dict(self._children.get(key, {}))

    @asynccontextmanager
    async def lock(self, key: JobKey) -> AsyncIterator[None]:
        """Hold the job's lock. The lock lives exactly as long as some reconcile holds or waits
        for it, so forgetting a deleted job (which may be created again under its name) never
        hands a second reconcile a fresh lock while the first still runs, and leaves nothing
        behind."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            users = self._locks[key][1] - 1
            if users:
                self._locks[key] = (lock, users)
            else:
                del self._locks[key]


def _key(body: Mapping[str, Any]) -> JobKey:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def _owner(body: Mapping[str, Any]) -> JobKey | None:
    owner = (body.get("metadata") or {}).get("labels", {}).get(JOB_LABEL)
    return None if owner is None else (body["metadata"]["namespace"], owner)


def _version(body: Mapping[str, Any] | None) -> str | None:
    return None if body is None else body.get("metadata", {}).get("resourceVersion")


def _child(body: Mapping[str, Any]) -> ChildKey:
    return body["kind"], body["metadata"]["name"]


def _newer(body: Mapping[str, Any], known: Mapping[str, Any] | None) -> bool:
    """Whether `body` is at least as new as `known`. Resource versions are opaque strings, but
    the API server's are etcd revisions: compared as numbers when both are, else taken."""
    if known is None:
        return True
    new, old = (b.get("metadata", {}).get("resourceVersion", "") for b in (body, known))
    return not (new.isdigit() and old.isdigit()) or int(new) >= int(old)


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A plain dict of a kopf body view or an API answer."""
    return {key: body[key] for key in body}
