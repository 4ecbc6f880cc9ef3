"""A queued learner as the operator reads it: where Kueue has it (the `Queued` condition), and the
Workload patches that suspend and resume it through Kueue. Pure, like decide.

Kueue resumes any admitted job that is suspended, so a queued job is suspended by deactivating
its Workload (`spec.active: false`): Kueue then evicts it (condition Evicted, reason
Deactivated), suspends the PyTorchJob and restores its pod templates; `true` requeues it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlkd_operator.resources import WORKLOADS

Body = Mapping[str, Any]
ADMITTED = "Admitted"
DEACTIVATING = "Deactivating"
"""The Suspended reason while a queued learner still runs: its Workload is (being) deactivated."""
# Workload conditions that say why it waits, most telling first: evicted (preempted,
# deactivated), then no quota reserved yet (WaitingForQuota, NoMatchingFlavor, ...).
WAITING = (("Evicted", "True"), ("QuotaReserved", "False"), (ADMITTED, "False"))


@dataclass(frozen=True)
class QueueState:
    """Whether a queued learner waits for Kueue, with Kueue's reason and message."""

    waiting: bool
    reason: str
    message: str


def queue_state(pytorchjob: Body, workload: Body | None) -> QueueState:
    """Admitted once Kueue has unsuspended the PyTorchJob (it does so only on admission);
    otherwise waiting, with the reason from the Workload's conditions when it was read, else
    from the PyTorchJob's Suspended condition."""
    suspended = bool(pytorchjob.get("spec", {}).get("runPolicy", {}).get("suspend"))
    conditions = {
        c.get("type"): c for c in (workload or {}).get("status", {}).get("conditions") or []
    }
    if not suspended:
        admitted = conditions.get(ADMITTED) or {}
        return QueueState(False, ADMITTED, admitted.get("message") or "admitted by Kueue")
    for type_, status in WAITING:
        if (c := conditions.get(type_)) is not None and c.get("status") == status:
            return QueueState(True, c.get("reason") or type_, c.get("message") or "")
    if workload is None:
        for c in pytorchjob.get("status", {}).get("conditions") or []:
            if c.get("type") == "Suspended" and c.get("status") == "True":
                return QueueState(True, c.get("reason") or "Suspended", c.get("message") or "")
        return QueueState(True, "Pending", "waiting for Kueue to create the job's Workload")
    return QueueState(True, "Pending", "waiting for Kueue to admit the job's Workload")


def active(workload: Body | None) -> bool | None:
    """The Workload's spec.active (Kueue's default: true); None when there is no Workload."""
    if workload is None:
        return None
    return workload.get("spec", {}).get("active") is not False


def activate(workload: Body, value: bool) -> dict[str, Any]:
    """The merge patch that sets a Workload's spec.active."""
    meta = workload["metadata"]
    return {
        "apiVersion": WORKLOADS.api_version,
        "kind": WORKLOADS.kind,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"active": value},
    }
