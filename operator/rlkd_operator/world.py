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
        owner = (body.get("metadata") or {}).get("labels", {}).get(JOB_LABEL)
        if owner is None:
            return None
        key = (body["metadata"]["namespace"], owner)
        child = (body["kind"], body["metadata"]["name"])
        if deleted:  # without creating an entry for a job that is gone
            self._children.get(key, {}).pop(child, None)
        elif _newer(body, self._children[key].get(child)):
            self._children[key][child] = _plain(body)
        return key

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
