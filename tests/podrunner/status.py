"""Status as the controllers the runner stands in for write it, from what the runner sees of its
processes. Pure: (the object, its current status, what runs) -> the new status.

- Deployment (kube-controller-manager's deployment controller, strategy Recreate): observed
  generation, replica counts (zeros left out, as Go's omitempty does), and Available, True once
  every desired replica is ready (Recreate allows none unavailable; at zero replicas too).
- batch/v1 Job (the job controller, v1.31+): startTime, active/ready/failed/succeeded; a success
  sets SuccessCriteriaMet then Complete (CompletionsReached), more failed pods than backoffLimit
  set FailureTarget then Failed (BackoffLimitExceeded): the API server refuses a terminal
  condition without its target beside it.
- PyTorchJob (Kubeflow Training Operator v1.9, pkg/controller.v1/pytorch/pytorchjob_controller.go
  UpdateJobStatus, pkg/util/status.go, pkg/controller.v1/common/job.go): Created, Running while the
  master runs, Succeeded when it exits 0 (Running turns False), Failed when the containers'
  restarts reach runPolicy.backoffLimit or a replica with restartPolicy Never fails; the reasons
  are `PyTorchJob<Type>`. Restarting is written only for a pod whose phase is Failed: with
  restartPolicy OnFailure the kubelet restarts the container inside the pod, which stays Running,
  so a killed learner shows Running throughout and only its restart count moves.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_condition(
    conditions: list[dict[str, Any]],
    kind: str,
    status: bool,
    reason: str,
    message: str,
    at: str,
    *,
    update_time: bool = False,
) -> list[dict[str, Any]]:
    """`conditions` with `kind` set (appended last when it changes), as the controllers' setters
    do: unchanged status and reason leave it as it was; an unchanged status keeps its
    lastTransitionTime. `update_time`: the condition carries lastUpdateTime too."""
    value = "True" if status else "False"
    current = next((c for c in conditions if c["type"] == kind), None)
    if current is not None and current["status"] == value and current.get("reason") == reason:
        return conditions
    transition = current["lastTransitionTime"] if current and current["status"] == value else at
    condition = {"type": kind, "status": value, "reason": reason, "message": message}
    condition["lastTransitionTime"] = transition
    if update_time:
        condition["lastUpdateTime"] = at
    return [*(c for c in conditions if c["type"] != kind), condition]


def deployment_status(
    deployment: Mapping[str, Any], pods: int, ready: int, at: str
) -> dict[str, Any]:
    """The status of a Deployment with `pods` pods (processes) of its template, `ready` of them
    passing their readiness probe."""
    desired = deployment["spec"].get("replicas", 1)
    old = deployment.get("status") or {}
    status: dict[str, Any] = {"observedGeneration": deployment["metadata"].get("generation", 1)}
    counts = {
        "replicas": pods,
        "updatedReplicas": pods,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(desired - ready, 0),
    }
    status.update({key: count for key, count in counts.items() if count})
    available = ready >= desired
    reason, message = (
        ("MinimumReplicasAvailable", "Deployment has minimum availability.")
        if available
        else ("MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    )
    status["conditions"] = with_condition(
        list(old.get("conditions") or []),
        "Available",
        available,
        reason,
        message,
        at,
        update_time=True,
    )
    return status


@dataclass(frozen=True)
class JobRun:
    """What a batch Job's pods did: one runs now (`active`, `ready`), `failed` failed, and
    whether one `succeeded`."""

    active: bool = False
    ready: bool = False
    failed: int = 0
    succeeded: bool = False


def job_finished(job: Mapping[str, Any]) -> bool:
    """The Job holds Complete or Failed: the job controller starts nothing more."""
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True" for c in conditions)


def job_exhausted(job: Mapping[str, Any], failed: int) -> bool:
    """More pods failed than spec.backoffLimit (default 6) allows."""
    return failed > job["spec"].get("backoffLimit", 6)


def job_status(job: Mapping[str, Any], run: JobRun, started: str | None, at: str) -> dict[str, Any]:
    """The status of a one-pod batch Job (completions 1, parallelism 1) after `run`."""
    old = job.get("status") or {}
    conditions = list(old.get("conditions") or [])
    status: dict[str, Any] = {}
    if started is not None:
        status["startTime"] = old.get("startTime") or started
    if run.active:
        status["active"] = 1
    status["ready"] = int(run.ready)
    if run.failed:
        status["failed"] = run.failed
    if run.succeeded:
        status["succeeded"] = 1
        message = "Reached expected number of succeeded pods"
        for kind in ("SuccessCriteriaMet", "Complete"):
            conditions = with_condition(conditions, kind, True, "CompletionsReached", message, at)
        status["completionTime"] = old.get("completionTime") or at
    elif job_exhausted(job, run.failed):
        message = "Job has reached the specified backoff limit"
        for kind in ("FailureTarget", "Failed"):
            conditions = with_condition(conditions, kind, True, "BackoffLimitExceeded", message, at)
    if job["spec"].get("suspend"):
        conditions = with_condition(
            conditions, "Suspended", True, "JobSuspended", "Job suspended", at
        )
    elif any(c["type"] == "Suspended" for c in conditions):
        conditions = with_condition(conditions, "Suspended", False, "JobResumed", "Job resumed", at)
    if conditions:
        status["conditions"] = conditions
    return status


@dataclass(frozen=True)
class ReplicaRun:
    """What the pods of one replica type do: how many run, succeeded, failed (phase Failed)."""

    active: int = 0
    succeeded: int = 0
    failed: int = 0


PYTORCHJOB = "PyTorchJob"
REPLICA_LABELS = {
    "training.kubeflow.org/operator-name": "pytorchjob-controller",
}


def _set(
    conditions: list[dict[str, Any]], kind: str, status: bool, reason: str, message: str, at: str
) -> list[dict[str, Any]]:
    """Kubeflow's setCondition/filterOutCondition (pkg/util/status.go): nothing changes once
    Failed; Running and Restarting replace each other; Succeeded and Failed turn Running False."""
    if any(c["type"] == "Failed" and c["status"] == "True" for c in conditions):
        return conditions
    value = "True" if status else "False"
    current = next((c for c in conditions if c["type"] == kind), None)
    if current is not None and (current["status"], current["reason"]) == (
        value,
        PYTORCHJOB + reason,
    ):
        return conditions
    transition = current["lastTransitionTime"] if current and current["status"] == value else at
    kept = []
    for c in conditions:
        if c["type"] == kind or {c["type"], kind} == {"Running", "Restarting"}:
            continue
        if kind in ("Succeeded", "Failed") and c["type"] == "Running":
            c = {**c, "status": "False"}
        kept.append(c)
    condition = {
        "type": kind,
        "status": value,
        "reason": f"{PYTORCHJOB}{reason}",
        "message": message,
        "lastUpdateTime": at,
        "lastTransitionTime": transition,
    }
    return [*kept, condition]


def pytorchjob_status(
    pytorchjob: Mapping[str, Any],
    replicas: Mapping[str, ReplicaRun],
    restarts: int,
    at: str,
) -> dict[str, Any]:
    """The status of a PyTorchJob whose replica types did `replicas`, its containers restarted
    `restarts` times in all (restartPolicy OnFailure)."""
    meta, spec = pytorchjob["metadata"], pytorchjob["spec"]
    name, ns = meta["name"], meta.get("namespace", "")
    old = pytorchjob.get("status") or {}
    conditions = list(old.get("conditions") or [])
    status: dict[str, Any] = {}
    if not conditions:
        conditions = _set(
            conditions, "Created", True, "Created", f"PyTorchJob {name} is created.", at
        )
    run_policy = spec.get("runPolicy") or {}
    if run_policy.get("suspend"):
        conditions = _set(
            conditions, "Suspended", True, "Suspended", f"PyTorchJob {name} is suspended.", at
        )
        conditions = _set(
            conditions, "Running", False, "Suspended", f"PyTorchJob {name} is suspended.", at
        )
        return {
            **old,
            "conditions": conditions,
            "replicaStatuses": old.get("replicaStatuses") or {},
        }
    if any(c["type"] == "Suspended" and c["status"] == "True" for c in conditions):
        conditions = _set(
            conditions, "Suspended", False, "Resumed", f"PyTorchJob {name} is resumed.", at
        )
    status["startTime"] = old.get("startTime") or at
    statuses: dict[str, Any] = {}
    for rtype, run in replicas.items():
        labels = {
            **REPLICA_LABELS,
            "training.kubeflow.org/job-name": name,
            "training.kubeflow.org/replica-type": rtype.lower(),
        }
        counts = {"active": run.active, "succeeded": run.succeeded, "failed": run.failed}
        statuses[rtype] = {
            **{key: count for key, count in counts.items() if count},
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        }
        wanted = spec["pytorchReplicaSpecs"][rtype].get("replicas", 1)
        if rtype == "Master":
            if run.active > 0:
                message = f"PyTorchJob {ns}/{name} is running."
                conditions = _set(conditions, "Running", True, "Running", message, at)
            if wanted - run.succeeded == 0:
                status["completionTime"] = old.get("completionTime") or at
                message = f"PyTorchJob {ns}/{name} successfully completed."
                conditions = _set(conditions, "Succeeded", True, "Succeeded", message, at)
        if run.failed > 0 and wanted > run.succeeded + run.active:
            policy = spec["pytorchReplicaSpecs"][rtype].get("restartPolicy", "OnFailure")
            count = f"{run.failed} {rtype} replica(s) failed."
            if policy == "Never":
                status["completionTime"] = old.get("completionTime") or at
                message = f"PyTorchJob {ns}/{name} has failed because {count}"
                conditions = _set(conditions, "Failed", True, "Failed", message, at)
            else:
                message = f"PyTorchJob {ns}/{name} is restarting because {count}"
                conditions = _set(conditions, "Restarting", True, "Restarting", message, at)
    if pytorchjob_exhausted(pytorchjob, restarts):
        status["completionTime"] = old.get("completionTime") or at
        message = f"Job {name} has failed because it has reached the specified backoff limit"
        conditions = _set(conditions, "Failed", True, "Failed", message, at)
    status["replicaStatuses"] = statuses
    status["conditions"] = conditions
    return status


def pytorchjob_exhausted(pytorchjob: Mapping[str, Any], restarts: int) -> bool:
    """The containers' restarts reached runPolicy.backoffLimit (any restart, at a limit of 0):
    common/job.go's pastBackoffLimit, which counts restarts of OnFailure replicas."""
    limit = (pytorchjob["spec"].get("runPolicy") or {}).get("backoffLimit")
    if limit is None:
        return False
    return restarts > 0 if limit == 0 else restarts >= limit


def pytorchjob_finished(pytorchjob: Mapping[str, Any]) -> bool:
    conditions = (pytorchjob.get("status") or {}).get("conditions") or []
    return any(c["type"] in ("Succeeded", "Failed") and c["status"] == "True" for c in conditions)
