"""The operator's brain: from an RLKDJob and what exists around it, the children to apply, the
next status and the events to post.

Pure: no network and no clock (the caller passes `now`), so every transition is a row in a table
test. Level-based: the answer depends only on what is observed now, so running it again on the
same inputs changes nothing, and an operator restarted at any point converges to the same end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from rlkd.errors import SpecError
from rlkd.k8s import OperatorDefaults, build_children, inference_name, inference_roles, learner_name
from rlkd.k8s.annotate import annotate_servers, gsrm_build
from rlkd.k8s.gsrm_build import build_servers
from rlkd.k8s.kueue import QUEUE_LABEL, queue_name, queued, without_kueue_fields
from rlkd.k8s.learner import PyTorchJobCondition
from rlkd.k8s.naming import COMPONENT_LABEL
from rlkd.k8s.prepare import learner_servers, prepare_servers
from rlkd.k8s.quantity import same_quantity
from rlkd.k8s.resolve import model_uri, resolve_job, storage_of
from rlkd.spec.progress import (
    PROGRESS_KEY,
    PrepareSummary,
    ProgressDocument,
    needs_prepare,
    run_prefix,
)
from rlkd.spec.resource import RLKDJob, namespace_of
from rlkd.spec.runtime import InferenceRole
from rlkd.spec.status import Artifacts, Condition, Phase, Progress, RLKDJobStatus
from rlkd.spec.validate import parse_job
from rlkd_operator import built, kueue, stall
from rlkd_operator.gsrm_build import GSRMBuildSeen

Body = Mapping[str, Any]
ChildKey = tuple[str, str]
"""(kind, name) of a child in the job's namespace."""
Resolved = RLKDJob | SpecError
"""A job's spec as parsed once per reconcile (`resolve`): the typed job with the operator's
defaults filled in, or the problems that keep it from being built."""

ARTIFACTS_GRACE = timedelta(minutes=10)
"""How long after a PyTorchJob (the learner, a GSRM build) succeeds its final model may take to
show up in the store."""
FINISHED: frozenset[str] = frozenset({"Succeeded", "Failed"})
CONDITION_TYPES = (
    "StoreReady",
    "InferenceReady",
    "GSRMBuilt",
    "Queued",
    "Prepared",
    "LearnerRunning",
    "Suspended",
    "Stalled",
    "Complete",
    "Failed",
    "ApplyFailed",
)
# Conditions that need a human when they reach this status: a Warning Event when they do.
WARN_WHEN = {"StoreReady": "False", "ApplyFailed": "True"}
# Failed reasons that a changed spec may cure: the job is tried again when the spec changes.
SPEC_FAILURES = frozenset({"InvalidSpec", "ApplyRejected"})
# Learner conditions by precedence: a PyTorchJob keeps old conditions True beside newer ones.
LEARNER_STATES = (
    PyTorchJobCondition.FAILED,
    PyTorchJobCondition.SUCCEEDED,
    PyTorchJobCondition.SUSPENDED,
    PyTorchJobCondition.RESTARTING,
    PyTorchJobCondition.RUNNING,
    PyTorchJobCondition.CREATED,
)


@dataclass(frozen=True)
class StoreCheck:
    """The provisioning check: store reachable, bucket present, dataset present."""

    ready: bool
    reason: str
    message: str


@dataclass(frozen=True)
class ApplyFailure:
    """A child the API server would not take, in words fit for a condition (no secret in them).
    `permanent`: the request itself is wrong (400, 422), so retrying the same spec cannot help."""

    reason: str
    message: str
    permanent: bool


@dataclass(frozen=True)
class LearnerState:
    """Where a PyTorchJob is: its condition of highest precedence (LEARNER_STATES) that is True,
    None while it has none, with that condition's reason and message."""

    condition: PyTorchJobCondition | None
    reason: str
    message: str

    @property
    def running(self) -> bool:
        return self.condition in (PyTorchJobCondition.RUNNING, PyTorchJobCondition.RESTARTING)

    @property
    def finished(self) -> bool:
        return self.condition in (PyTorchJobCondition.SUCCEEDED, PyTorchJobCondition.FAILED)


@dataclass(frozen=True)
class JobState:
    """Where a batch Job (prepare, annotate) is: succeeded or failed by its Complete or Failed
    condition, else still running; with that condition's reason and message."""

    succeeded: bool
    failed: bool
    reason: str
    message: str

    @property
    def running(self) -> bool:
        return not (self.succeeded or self.failed)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the final phase, a reason a program can match on, and a message."""

    phase: Literal["Succeeded", "Failed"]
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """What exists now. `store` and `progress` are None when they were not read this time;
    `failure` is set when applying this reconcile's children failed."""

    children: Mapping[ChildKey, Body] = field(default_factory=dict)
    store: StoreCheck | None = None
    progress: ProgressDocument | None = None
    model_present: bool = False
    failure: ApplyFailure | None = None
    workload: Body | None = None
    """Kueue's Workload of a queued learner, when read (Needs.workload) and found."""
    prepared: PrepareSummary | None = None
    """prepare.json, read when the prepare Job failed (its counts go into the message)."""
    progress_read: bool = False
    """The progress document was read this time: `progress` None then means there is none yet.
    A store that could not be read tells the stall watchdog nothing."""
    gsrm_build: GSRMBuildSeen | None = None
    """What the store says of the job's GSRM build (Needs.gsrm_build); None when not read."""


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the RLKDJob."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    """What to do: apply `apply` (create-or-patch), merge-patch the existing children in
    `patch` (nothing when gone), write `status` when it differs from the current one, post
    `events`, delete the job when `delete` (ttlSecondsAfterFinished), and the learner's pods
    when `restart` (rlkd_operator.stall)."""

    status: dict[str, Any]
    apply: tuple[dict[str, Any], ...] = ()
    events: tuple[Event, ...] = ()
    delete: bool = False
    patch: tuple[dict[str, Any], ...] = ()
    restart: str | None = None
    """A stalled learner to restart: delete the pods of the PyTorchJob of this name."""


@dataclass(frozen=True)
class Needs:
    """What the handler must read before deciding: a store check, the progress document, the
    queued learner's Workload, the prepare summary (prepare.json), the GSRM build's progress
    and model, and its reports (annotate.json, evaluation.json) when a build step failed."""

    store_check: bool
    progress: bool
    workload: bool = False
    prepared: bool = False
    gsrm_build: bool = False
    build_reports: bool = False


def needs(body: Body, children: Mapping[ChildKey, Body], *, broken: bool = False) -> Needs:
    """Store reads only where they can change the decision, so a quiet job costs no requests.
    `broken`: the spec cannot be built (a queued learner is then stopped through Kueue)."""
    status = current_status(body)
    pytorchjob = children.get(("PyTorchJob", body["metadata"]["name"]))  # named as the job
    if status.phase in FINISHED:  # a queued learner still running is stopped through Kueue
        return Needs(store_check=False, progress=False, workload=_running_queued(pytorchjob))
    store = _condition(status, "StoreReady")
    generation = body.get("metadata", {}).get("generation")
    stale = store is None or store.status != "True" or store.observed_generation != generation
    learner = pytorchjob is not None
    prepare = job_state(_step_child(children, "prepare"))
    # The GSRM build is read until it is known built (a build is immutable, so that stays true):
    # a restarted operator has it in status, a recreated job finds it in the store.
    building = _builds(body) and not learner and not _holds(status, "GSRMBuilt")
    build = learner_state(_step_child(children, "build", kind="PyTorchJob"))
    annotate = job_state(_step_child(children, "annotate"))
    step_failed = (annotate is not None and annotate.failed) or (
        build is not None and build.condition == PyTorchJobCondition.FAILED
    )
    # The check gates only the start: once the learner runs, the store is its business.
    # A queued learner's Workload says why it waits, and is what suspends it.
    suspend = bool(body.get("spec", {}).get("suspend"))
    waits = queued(pytorchjob) and (suspend or broken or _suspended(pytorchjob))
    return Needs(
        store_check=stale and not learner,
        progress=learner,
        workload=waits,
        prepared=prepare is not None and prepare.failed and not learner,
        gsrm_build=building,
        build_reports=building and step_failed,
    )


def needs_poll(body: Body) -> bool:
    """Whether the job waits on something that sends no event: the store (progress, a failed
    check to retry) or the clock (ttlSecondsAfterFinished)."""
    status = current_status(body)
    if status.phase in FINISHED:
        return body.get("spec", {}).get("ttlSecondsAfterFinished") is not None
    store = _condition(status, "StoreReady")
    # A Workload's changes send the operator no event: a job waiting on Kueue is read again.
    queue = _condition(status, "Queued")
    suspended = _condition(status, "Suspended")
    # A GSRM build's training progress; a build not read yet (the store did not answer).
    unread_build = _builds(body) and _condition(status, "GSRMBuilt") is None
    return (
        status.phase in ("Training", "Evaluating", "BuildingGSRM")
        or unread_build
        or store is None
        or store.status != "True"
        or (queue is not None and queue.status == "True")
        or (suspended is not None and suspended.reason == kueue.DEACTIVATING)
    )


def decide(
    body: Body, job: Resolved, observed: Observed, defaults: OperatorDefaults, now: datetime
) -> Decision:
    """The next step for one RLKDJob (see the module docstring); `job` is resolve(body)."""
    old = current_status(body)
    plan = _Plan(old, body.get("metadata", {}).get("generation"), now)
    if old.phase in FINISHED and not _retry_invalid(old, plan.generation):
        # Finished, whatever the spec says now: the status stays, inference stays at zero, a
        # learner that has not finished is stopped (e.g. a queued one whose Workload was not
        # read when the job failed).
        if isinstance(job, SpecError):
            plan.patch = _release(observed.children, observed.workload)
        else:
            plan.apply = _manifests(
                job, defaults, observed, scale_to_zero=True, learner=False, create=False
            )
            learner = observed.children.get(("PyTorchJob", learner_name(job)))
            plan.patch = _stop_learner(learner, observed.workload) if learner else []
    elif isinstance(job, SpecError):
        plan.fail("InvalidSpec", "the spec cannot be built: " + "; ".join(job.problems))
        plan.patch = _release(observed.children, observed.workload)
    else:
        if old.phase in FINISHED:  # a fixed spec: start over
            plan.conditions.pop("Failed")
            plan.completion_time = None
        _step(plan, job, observed, defaults)
    _apply_failure(plan, observed.failure)
    return plan.decision(body.get("spec", {}).get("ttlSecondsAfterFinished"))


def resolve(body: Body, defaults: OperatorDefaults) -> Resolved:
    """The typed job with the operator's defaults filled in, or the SpecError that says why it
    cannot be built (decide reports it). Status is the operator's own and is not part of what
    the user wrote."""
    try:
        return resolve_job(
            parse_job(
                {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body}
            ),
            defaults,
        )
    except SpecError as exc:
        return exc


def current_status(body: Body) -> RLKDJobStatus:
    """The status as stored; an unreadable one counts as none (it is rewritten)."""
    try:
        return RLKDJobStatus.model_validate(body.get("status") or {}, by_name=False)
    except ValidationError:
        return RLKDJobStatus()


def _true_conditions(child: Body) -> dict[str, Body]:
    """A child's status conditions that are True, by type."""
    return {
        c.get("type"): c
        for c in child.get("status", {}).get("conditions") or []
        if c.get("status") == "True"
    }


def learner_state(pytorchjob: Body | None) -> LearnerState | None:
    """The state of a PyTorchJob from its conditions; None when it is absent."""
    if pytorchjob is None:
        return None
    true = _true_conditions(pytorchjob)
    for state in LEARNER_STATES:
        if state in true:
            return LearnerState(
                state, true[state].get("reason") or state, true[state].get("message") or ""
            )
    return LearnerState(None, "Pending", "the PyTorchJob has no conditions yet")


def job_state(job: Body | None) -> JobState | None:
    """The state of a batch Job from its conditions; None when it is absent."""
    if job is None:
        return None
    true = _true_conditions(job)
    for kind in ("Failed", "Complete"):
        if kind in true:
            reason = true[kind].get("reason") or f"Job{kind}"
            return JobState(
                kind == "Complete", kind == "Failed", reason, true[kind].get("message") or ""
            )
    return JobState(False, False, "Running", "the Job runs")


def contains(live: Any, desired: Any, key: str = "", parent: str = "") -> bool:
    """Whether `live` holds every key and value of `desired`, recursively (lists element by
    element, same length): what a merge patch of `desired` would leave unchanged. Extra keys in
    `live` are the API server's defaults and status, and are fine. Compared as the server stores
    them: quantities (requests, limits, sizeLimit, storage) by value, since it canonicalises
    them (`1` is stored as `"1"`); an absent field equals a Go zero value (`false`, `0`, `""`,
    `[]`, `{}`), since `omitempty` drops those; else a patch could never make them match."""
    if live is None and desired in (False, 0, "", [], {}) and desired is not None:
        return True
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            contains(live.get(name), value, name, key) for name, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(a, b, key, parent) for a, b in zip(live, desired, strict=True))
        )
    if parent in QUANTITY_MAPS or key in QUANTITY_FIELDS:
        return same_quantity(live, desired)
    return bool(live == desired)


QUANTITY_MAPS = frozenset({"requests", "limits"})
"""Maps whose values are resource quantities (container resources, a PVC's request)."""
QUANTITY_FIELDS = frozenset({"sizeLimit"})
"""Single quantity fields (an emptyDir's size)."""


class _Plan:
    """The status being built: phase, message, conditions with their transition times kept."""

    def __init__(self, old: RLKDJobStatus, generation: int | None, now: datetime) -> None:
        self.old = old
        self.generation = generation
        self.at = now
        self.now = _stamp(now)
        """`at` as written in status (RFC 3339, to the second)."""
        self.phase: Phase = old.phase
        self.message = old.message
        self.conditions = {c.type: c for c in old.conditions}
        self.progress = old.progress
        self.artifacts = old.artifacts
        self.start_time = old.start_time
        self.completion_time = old.completion_time
        self.watchdog = old.watchdog
        self.restart: str | None = None
        self.apply: list[dict[str, Any]] = []
        self.patch: list[dict[str, Any]] = []
        self.events: list[Event] = []

    def set(self, type_: str, holds: bool, reason: str, message: str = "") -> None:
        """Set a condition, keeping its transition time while its status stays; one that turns
        bad (WARN_WHEN) is also a Warning Event (it needs a human)."""
        status: Literal["True", "False"] = "True" if holds else "False"
        before = self.conditions.get(type_)
        kept = before.last_transition_time if before and before.status == status else None
        self.conditions[type_] = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=kept or self.now,
            observed_generation=self.generation,
        )
        turned = before is None or before.status != status
        if turned and WARN_WHEN.get(type_) == status:
            self.events.append(Event("Warning", reason, message))

    def to(self, phase: Phase, message: str) -> None:
        self.phase, self.message = phase, message

    def end(self, outcome: Outcome) -> None:
        """The run is over: Complete (or Failed) holds with the outcome's reason and message."""
        holds = "Complete" if outcome.phase == "Succeeded" else "Failed"
        self.set(holds, True, outcome.reason, outcome.message)
        self.to(outcome.phase, outcome.message)

    def fail(self, reason: str, message: str) -> None:
        self.end(Outcome("Failed", reason, message))

    def decision(self, ttl: object) -> Decision:
        """The decision; `ttl` is the raw spec field, readable even when the spec is not."""
        finished = self.phase in FINISHED
        if finished and self.phase != self.old.phase:
            self.completion_time = self.now
        if self.phase != self.old.phase:
            kind: Literal["Normal", "Warning"] = "Warning" if self.phase == "Failed" else "Normal"
            self.events.append(Event(kind, self.phase, self.message or self.phase))
        status = RLKDJobStatus(
            phase=self.phase,
            message=self.message,
            observed_generation=self.generation,
            conditions=[self.conditions[t] for t in CONDITION_TYPES if t in self.conditions],
            start_time=self.start_time,
            completion_time=self.completion_time,
            progress=self.progress,
            artifacts=self.artifacts,
            watchdog=self.watchdog,
        )
        done = _parse_time(self.completion_time)
        expired = (
            finished
            and isinstance(ttl, int)
            and done is not None
            and self.at >= done + timedelta(seconds=ttl)
        )
        return Decision(
            _dump(status),
            tuple(self.apply),
            tuple(self.events),
            delete=expired,
            patch=tuple(self.patch),
            restart=self.restart,
        )


def _step(plan: _Plan, job: RLKDJob, observed: Observed, defaults: OperatorDefaults) -> None:
    """Fill `plan` for a job that has not finished."""
    if observed.store is not None:
        plan.set("StoreReady", observed.store.ready, observed.store.reason, observed.store.message)
    _read_progress(plan, job, observed)
    learner = observed.children.get(("PyTorchJob", learner_name(job)))
    state = learner_state(learner)
    if state is not None:
        plan.set("LearnerRunning", state.running, state.reason, state.message)
    if (failed_prepare := _prepare_outcome(state, observed)) is not None:
        plan.set("Prepared", False, failed_prepare.reason, failed_prepare.message)
    unbuilt = _unbuilt(plan, job, observed, state)
    outcome = _outcome(state, learner, observed, plan.at) or failed_prepare
    if outcome is None and unbuilt:
        outcome = _build_outcome(plan, job, observed)
    if outcome is None and learner is not None:
        outcome = _watch(plan, job, observed, learner, state)
    if outcome is not None:
        plan.end(outcome)
        plan.apply = _manifests(
            job, defaults, observed, scale_to_zero=True, learner=False, withhold=unbuilt
        )
    elif job.spec.suspend:
        plan.set("Suspended", True, "Suspended", "spec.suspend is true")
        plan.to("Suspended", "suspended: the learner is stopped and inference is scaled to zero")
        plan.apply = _manifests(
            job,
            defaults,
            observed,
            scale_to_zero=True,
            learner=state is not None,
            build=_step_child(observed.children, "build", kind="PyTorchJob") is not None,
            withhold=unbuilt,
        )
        plan.patch = _suspend_jobs(observed.children, True)
        if learner is not None and queued(learner):
            _suspend_queued(plan, learner, observed.workload)
    else:
        if "Suspended" in plan.conditions:
            plan.set("Suspended", False, "Resumed", "spec.suspend is false")
        if queued(learner) and kueue.active(observed.workload) is False:
            plan.patch.append(kueue.activate(observed.workload or {}, True))
        if unbuilt:
            _build_gsrm(plan, job, observed, defaults)
        else:
            _provision_or_train(plan, job, observed, defaults, learner, state)


def _watch(
    plan: _Plan, job: RLKDJob, observed: Observed, learner: Body, state: LearnerState | None
) -> Outcome | None:
    """The stall watchdog (rlkd_operator.stall) on a learner that exists: a Stalled condition,
    a Warning, and a restart of its pods or, past the limit, the job Failed with reason Stalled
    (the learner stopped, so it holds no GPU)."""
    running = (
        state is not None
        and state.condition == PyTorchJobCondition.RUNNING
        and not job.spec.suspend
        and not _suspended(learner)
    )
    if running and not observed.progress_read:
        return None  # the store did not answer: nothing seen, nothing to judge
    verdict = stall.check(
        plan.watchdog,
        running=running,
        doc=observed.progress,
        learner=job.spec.learner,
        now=plan.at,
        stamp=plan.now,
    )
    plan.watchdog = verdict.watchdog
    stalled = plan.conditions.get("Stalled")
    if stalled is not None and stalled.status == "True" and verdict.action is None:
        if verdict.moved:
            plan.set("Stalled", False, "Progressing", f"the learner moved: {verdict.watchdog.mark}")
        elif stalled.reason == "Stalled":  # reported only, and the spec's budget was raised
            plan.set("Stalled", False, "WithinBudget", "within spec.learner's budgets again")
    if verdict.action is None:
        return None
    if verdict.action != "report" or stalled is None or stalled.status != "True":
        plan.events.append(Event("Warning", "Stalled", verdict.message))
    if verdict.action == "fail":
        plan.set("Stalled", True, "Stalled", verdict.message)
        plan.patch = _stop_learner(learner, observed.workload)
        return Outcome("Failed", "Stalled", f"the learner stalled: {verdict.message}")
    if verdict.action == "restart":
        plan.restart = learner["metadata"]["name"]
        plan.set("Stalled", True, "Restarted", verdict.message)
    else:
        plan.set("Stalled", True, "Stalled", verdict.message)
    return None


def _suspend_queued(plan: _Plan, learner: Body, workload: Body | None) -> None:
    """Suspend a queued learner through Kueue (module rlkd_operator.kueue): deactivate its
    Workload, and say so until Kueue has suspended the PyTorchJob. Not queued meanwhile."""
    plan.conditions.pop("Queued", None)
    if workload is not None and kueue.active(workload):
        plan.patch.append(kueue.activate(workload, False))
    if _suspended(learner):
        return
    if workload is None:
        message = "spec.suspend is true; waiting for Kueue's Workload of the learner to deactivate"
    else:
        name = workload["metadata"]["name"]
        message = f"spec.suspend is true; Workload {name} deactivated, Kueue stops the learner"
    plan.set("Suspended", True, kueue.DEACTIVATING, message)


def _outcome(
    state: LearnerState | None, learner: Body | None, observed: Observed, now: datetime
) -> Outcome | None:
    """How the run ended by its learner: Failed with the learner (quoting the reason the learner
    wrote in its progress document, when it wrote one), Succeeded once the final artifacts are in
    the store, Failed when they never come; None while the run goes on."""
    if state is None or not state.finished:
        return None
    doc = observed.progress
    if state.condition == PyTorchJobCondition.FAILED:
        message = f"the learner failed: {state.message or state.reason}"
        own = doc.failure if doc is not None else None
        return Outcome("Failed", state.reason, _joined(message, own or ""))
    if doc is not None and doc.stage == "finished" and doc.model and observed.model_present:
        after = doc.evaluations.get("after")
        numbers = (
            after.model_dump(include={"accuracy", "structure"}, exclude_none=True) if after else {}
        )
        metrics = ", ".join(f"{k}={v:g}" for k, v in sorted(numbers.items()))
        message = f"succeeded: model at {doc.model}" + (f"; {metrics}" if metrics else "")
        return Outcome("Succeeded", "Succeeded", message)
    if _overdue(learner, now):
        return Outcome(
            "Failed",
            "ArtifactsMissing",
            "the learner succeeded but its final model is not in the store after "
            f"{ARTIFACTS_GRACE}; check the learner's logs and the store",
        )
    return None


def _prepare_outcome(state: LearnerState | None, observed: Observed) -> Outcome | None:
    """Failed when the prepare Job failed (before any learner exists): the Job's reason and
    message, with the counts of prepare.json when it was read."""
    prepare = job_state(_step_child(observed.children, "prepare"))
    if state is not None or prepare is None or not prepare.failed:
        return None
    message = f"the prepare Job failed: {prepare.message or prepare.reason}"
    if observed.prepared is not None:
        message += f"; prepare.json: {observed.prepared.counts()}"
    return Outcome("Failed", prepare.reason, message)


def _unbuilt(
    plan: _Plan, job: RLKDJob, observed: Observed, state: LearnerState | None
) -> tuple[InferenceRole, ...]:
    """The roles whose servers wait for the job's GSRM build: the GSRM's own while it is not
    built (its model is not there yet), else none. The build counts as done once GSRMBuilt holds
    (set here when the store shows the built GSRM and the build's PyTorchJob, if any, succeeded:
    its Master gates after training), or once a learner exists."""
    if gsrm_build(job.spec) is None or state is not None:
        return ()
    if (done := plan.conditions.get("GSRMBuilt")) is not None and done.status == "True":
        return ()
    build = learner_state(_step_child(observed.children, "build", kind="PyTorchJob"))
    seen = observed.gsrm_build
    if seen is not None and seen.built and (build is None or _succeeded(build)):
        plan.set("GSRMBuilt", True, "Built", f"the GSRM is built at {_built_uri(job)}")
        return ()
    return ("gsrm",)


def _build_outcome(plan: _Plan, job: RLKDJob, observed: Observed) -> Outcome | None:
    """Failed when a step of the GSRM build failed: the annotate Job (quoting annotate.json), the
    build's PyTorchJob (quoting evaluation.json, the gate's report, else the build's own failure),
    or a build that succeeded without its GSRM reaching the store within ARTIFACTS_GRACE."""
    annotate = job_state(_step_child(observed.children, "annotate"))
    child = _step_child(observed.children, "build", kind="PyTorchJob")
    build = learner_state(child)
    seen = observed.gsrm_build or GSRMBuildSeen()
    if build is None and annotate is not None and annotate.failed:
        message = f"the annotate Job failed: {annotate.message or annotate.reason}"
        outcome = Outcome("Failed", annotate.reason, _joined(message, seen.annotate_line()))
    elif build is not None and build.condition == PyTorchJobCondition.FAILED:
        message = f"the GSRM build failed: {build.message or build.reason}"
        report = seen.evaluation_line()
        own = seen.progress.failure if seen.progress is not None else None
        outcome = Outcome("Failed", build.reason, _joined(message, report or own or ""))
    elif build is not None and _succeeded(build) and _overdue(child, plan.at):
        outcome = Outcome(
            "Failed",
            "GSRMMissing",
            f"the GSRM build succeeded but {_built_uri(job)} holds no model, or the build's "
            f"progress document does not say finished, {ARTIFACTS_GRACE} later; check the "
            "build's logs and the store",
        )
    else:
        return None
    plan.set("GSRMBuilt", False, outcome.reason, outcome.message)
    return outcome


def _build_gsrm(plan: _Plan, job: RLKDJob, observed: Observed, defaults: OperatorDefaults) -> None:
    """A job whose GSRM is not built yet: the store first, as for every job; then the servers
    `rlkd annotate` calls (the annotator, when served) and the annotate Job (Annotating); then the
    servers the build calls and its PyTorchJob (BuildingGSRM). Every other server stays at zero
    replicas, the annotator too once annotation is done, and the GSRM's own is not created."""
    if not _store_ready(plan):
        return
    children = observed.children
    annotate = job_state(_step_child(children, "annotate"))
    child = _step_child(children, "build", kind="PyTorchJob")
    build = learner_state(child)
    if observed.gsrm_build is None and annotate is None and build is None:
        # Not read (the store did not answer): whether it is built is unknown, so start nothing.
        plan.to("Provisioning", "reading the GSRM build's progress from the store")
        return
    annotating = build is None and not (annotate is not None and annotate.succeeded)
    wanted = annotate_servers(job.spec) if annotating else build_servers(job.spec)
    idle = [role for role in inference_roles(job.spec) if role not in wanted]
    starting = _starting(job, observed, wanted)
    _inference_ready(plan, starting)
    if annotating:
        plan.apply = _manifests(
            job,
            defaults,
            observed,
            scale_to_zero=False,
            learner=False,
            idle=idle,
            withhold=("gsrm",),
            create_job=None if starting else "annotate",
        )
        plan.patch = _suspend_jobs(children, bool(starting))
        if annotate is None and starting:
            message = "waiting for the annotator server to start"
            plan.set("GSRMBuilt", False, "Provisioning", message)
            plan.to("Provisioning", message)
            return
        plan.set("GSRMBuilt", False, "Annotating", "the annotate Job runs rlkd annotate")
        plan.to("Annotating", "annotating: the annotator decomposes the teacher's paths")
        return
    plan.apply = _manifests(
        job,
        defaults,
        observed,
        scale_to_zero=False,
        learner=False,
        build=build is not None or not starting,
        hold_build=bool(starting) and _suspended(child),
        idle=idle,
        withhold=("gsrm",),
    )
    if build is None and starting:
        message = "waiting for the GSRM build's inference servers to start"
        plan.set("GSRMBuilt", False, "Provisioning", message)
        plan.to("Provisioning", message)
        return
    if build is not None and _succeeded(build):
        message = "the GSRM build succeeded; waiting for the built GSRM in the store"
    elif build is not None and build.running:
        progress = observed.gsrm_build.step() if observed.gsrm_build else "running"
        message = f"building the GSRM: {progress}"
    else:
        message = "building the GSRM: waiting for its PyTorchJob to start"
    plan.set("GSRMBuilt", False, "Building", message)
    plan.to("BuildingGSRM", message)


def _store_ready(plan: _Plan) -> bool:
    """Whether the store check passed; else the job waits for it (Pending until it ran, then
    Provisioning with the check's message)."""
    store = plan.conditions.get("StoreReady")
    if store is None:
        plan.to("Pending", "checking the store")
        return False
    if store.status != "True":
        plan.to("Provisioning", store.message)
        return False
    return True


def _starting(job: RLKDJob, observed: Observed, roles: list[InferenceRole]) -> list[str]:
    """The Deployments of `roles` that are not available yet."""
    return [
        name
        for name in (inference_name(job, role) for role in roles)
        if not _available(observed.children.get(("Deployment", name)))
    ]


def _inference_ready(plan: _Plan, starting: list[str]) -> None:
    if starting:
        plan.set(
            "InferenceReady", False, "Starting", f"waiting for Deployment {', '.join(starting)}"
        )
    else:
        plan.set("InferenceReady", True, "Available", "every inference server needed is Available")


def _built_uri(job: RLKDJob) -> str:
    """Where the built GSRM goes: spec.gsrm.model as the servers load it."""
    return model_uri((job.spec.gsrm.model if job.spec.gsrm else None) or "", storage_of(job))


def _succeeded(state: LearnerState) -> bool:
    return state.condition == PyTorchJobCondition.SUCCEEDED


def _overdue(pytorchjob: Body | None, now: datetime) -> bool:
    """A finished PyTorchJob whose artifacts had ARTIFACTS_GRACE to reach the store."""
    done = _parse_time((pytorchjob or {}).get("status", {}).get("completionTime"))
    return done is not None and now - done > ARTIFACTS_GRACE


def _joined(message: str, detail: str) -> str:
    return f"{message}; {detail}" if detail else message


def _provision_or_train(
    plan: _Plan,
    job: RLKDJob,
    observed: Observed,
    defaults: OperatorDefaults,
    learner: Body | None,
    state: LearnerState | None,
) -> None:
    """The store first; then, when the teacher side needs computing, the servers prepare calls
    and the prepare Job (Preparing); then the learner's servers and the learner once they are
    available (_available); a suspended learner stays suspended until then (a resume), so it
    never runs against servers that are not up. Training (or Evaluating) while it runs. A
    queued learner (Kueue) comes first, and its servers only once Kueue has admitted it."""
    if state is None and not _store_ready(plan):
        return
    queue = _queue_of(job, learner)
    prepare = job_state(_step_child(observed.children, "prepare"))
    preparing = needs_prepare(job.spec) and state is None and not (prepare and prepare.succeeded)
    # Only the servers the next step calls run: prepare's (teacher, gsrm) while it runs, then the
    # learner's (gsrm, judge, rollout); the teacher's paths are cached by then. A queued learner
    # is created (after prepare) at once, suspended, for Kueue to admit; its servers start only
    # once Kueue has admitted it (no GPUs held while it waits), and its pods wait for them.
    roles = inference_roles(job.spec)
    wanted = prepare_servers(job.spec) if preparing else learner_servers(job.spec)
    idle = [r for r in roles if r not in wanted]
    admitted = queue is None or (learner is not None and not _suspended(learner))
    starting = _starting(job, observed, wanted)
    if not preparing and not admitted:
        plan.set("InferenceReady", False, "Queued", "the servers start once Kueue admits the job")
    else:
        _inference_ready(plan, starting)
    if preparing:
        plan.apply = _manifests(
            job,
            defaults,
            observed,
            scale_to_zero=False,
            learner=False,
            idle=idle,
            create_job=None if starting else "prepare",
        )
        plan.patch = _suspend_jobs(observed.children, bool(starting))
        if prepare is None and starting:
            plan.to(
                "Provisioning", "waiting for the inference servers of the prepare step to start"
            )
            return
        plan.set("Prepared", False, "Running", "the prepare Job runs rlkd prepare")
        plan.to("Preparing", "preparing: sampling and decomposing the teacher side (rlkd prepare)")
        return
    if prepare is not None and prepare.succeeded:
        plan.set("Prepared", True, prepare.reason, "the teacher side is cached in the store")
    plan.apply = _manifests(
        job,
        defaults,
        observed,
        scale_to_zero=not admitted,
        learner=queue is not None or state is not None or not starting,
        hold_learner=queue is None and bool(starting) and _suspended(learner),
        idle=idle,
    )
    if queue is not None:
        held = (
            kueue.queue_state(learner, observed.workload)
            if learner is not None
            else kueue.QueueState(True, "Creating", "creating the PyTorchJob in the queue")
        )
        plan.set("Queued", held.waiting, held.reason, held.message)
        if held.waiting:
            detail = f"{held.reason}: {held.message}" if held.message else held.reason
            plan.to("Provisioning", f"queued in Kueue LocalQueue {queue}: {detail}")
            return
    succeeded = state is not None and state.condition == PyTorchJobCondition.SUCCEEDED
    if state is None or not (state.running or succeeded):
        waiting = "inference servers" if starting else "learner"
        plan.to("Provisioning", f"waiting for the {waiting} to start")
        return
    if plan.start_time is None:
        plan.start_time = plan.now
    doc = observed.progress
    stage = doc.stage if doc else ("evaluating" if plan.old.phase == "Evaluating" else "training")
    phase: Phase = "Evaluating" if job.spec.evaluation and stage == "evaluating" else "Training"
    if stage == "finished" and plan.old.phase in ("Training", "Evaluating"):
        phase = plan.old.phase  # done, its pods exiting: no step back from Evaluating to Training
    if succeeded or stage == "finished":
        message = "the learner finished; waiting for the final model in the store"
    elif phase == "Evaluating":
        message = "evaluating the distilled student"
    else:
        message = _training_message(plan.progress)
    plan.to(phase, message)


def _read_progress(plan: _Plan, job: RLKDJob, observed: Observed) -> None:
    """Progress and artifact URIs from the learner's progress document, when it was read."""
    doc = observed.progress
    if doc is None:
        return
    plan.progress = Progress.model_validate(
        {name: getattr(doc, name) for name in Progress.model_fields}
    )
    storage = storage_of(job)
    run = run_prefix(storage.prefix, namespace_of(job), job.metadata.name)
    finished = doc.stage == "finished" and observed.model_present
    plan.artifacts = Artifacts(
        checkpoint=doc.checkpoint,
        model=doc.model if finished else None,
        progress=f"s3://{storage.bucket}/{run}/{PROGRESS_KEY}",
    )


def _training_message(progress: Progress | None) -> str:
    if progress is None:
        return "training"
    total = f"/{progress.total_steps}" if progress.total_steps else ""
    reward = "" if progress.mean_reward is None else f", mean reward {progress.mean_reward:.4g}"
    return f"training: step {progress.step}{total}{reward}"


def _retry_invalid(old: RLKDJobStatus, generation: int | None) -> bool:
    """A job that failed on its spec (SPEC_FAILURES) is tried again once the spec changes."""
    failed = _condition(old, "Failed")
    changed = old.observed_generation != generation
    return failed is not None and failed.reason in SPEC_FAILURES and changed


def _apply_failure(plan: _Plan, failure: ApplyFailure | None) -> None:
    """Report a child the API server would not take: a condition (and a Warning when it turns
    True), and Failed when the request itself is wrong; a finished job keeps its end. The
    condition goes once children apply again, or none is missing; a finished job creates none,
    so it keeps the condition that explains its end."""
    if failure is None:
        if plan.apply or plan.patch or plan.phase not in FINISHED:
            plan.conditions.pop("ApplyFailed", None)
        return
    plan.apply, plan.patch = [], []
    plan.set("ApplyFailed", True, failure.reason, failure.message)
    if plan.phase in FINISHED:
        return
    if failure.permanent:
        plan.fail("ApplyRejected", failure.message)
    else:
        plan.message = failure.message


def _manifests(
    job: RLKDJob,
    defaults: OperatorDefaults,
    observed: Observed,
    *,
    scale_to_zero: bool,
    learner: bool,
    hold_learner: bool = False,
    create: bool = True,
    idle: tuple[InferenceRole, ...] | list[InferenceRole] = (),
    create_job: Literal["prepare", "annotate"] | None = None,
    build: bool = False,
    hold_build: bool = False,
    withhold: tuple[InferenceRole, ...] = (),
) -> list[dict[str, Any]]:
    """The children to apply: those missing (unless not `create`) or whose live object does not
    contain the manifest (edited by hand, e.g. scaled or given another image). `hold_learner`
    keeps the learner suspended whatever the spec says; `idle` roles get zero replicas. Each
    records what it was built from (rlkd_operator.built): a child built at this generation by
    other builders (an operator upgrade) keeps its build. A queued learner, once it exists, is
    never sent what Kueue owns. The batch Jobs (prepare, annotate) are only ever created (the
    one named by `create_job`), never patched: their pod templates are immutable, and they are
    kept as they are once they ran. The GSRM build's PyTorchJob is applied like the learner when
    `build` (held suspended by `hold_build`). The servers of the `withhold` roles are not
    created (a GSRM not built yet), and kept at zero replicas if they exist."""
    children = build_children(job, defaults, inference_replicas=0 if scale_to_zero else None)
    if hold_learner:
        children.learner["spec"]["runPolicy"]["suspend"] = True
    if hold_build and children.build is not None:
        children.build["spec"]["runPolicy"]["suspend"] = True
    for role in (r for r in (*idle, *withhold) if r in children.inference):
        children.inference[role].deployment["spec"]["replicas"] = 0
    withheld = [
        m
        for role in withhold
        if (c := children.inference.get(role)) is not None
        for m in (c.deployment, c.service)
    ]
    jobs = {"prepare": children.prepare, "annotate": children.annotate}
    out = []
    for manifest in children.all():
        is_learner = manifest is children.learner
        if (is_learner and not learner) or (manifest is children.build and not build):
            continue
        built.recorded(manifest, job.metadata.generation)
        key = (manifest["kind"], manifest["metadata"]["name"])
        if any(manifest is m for m in jobs.values()):
            if create_job and manifest is jobs[create_job] and key not in observed.children:
                out.append(manifest)
            continue
        seen = observed.children.get(key)
        if seen is None:
            if create and not any(manifest is m for m in withheld):
                out.append(manifest)
            continue
        want = built.desired(seen, manifest)
        if want is not None and is_learner and queued(seen):
            want = without_kueue_fields(want)
        if want is not None and not contains(seen, want):
            out.append(want)
    return out


def _release(children: Mapping[ChildKey, Body], workload: Body | None) -> list[dict[str, Any]]:
    """Merge patches that give a job's GPUs back when its spec cannot be built (so there are no
    manifests to build): existing inference Deployments to zero replicas, a learner that has
    not finished suspended (a queued one by deactivating its Workload), a running prepare Job
    suspended."""
    patches = []
    for (kind, name), child in children.items():
        if kind == "PyTorchJob":
            patches += _stop_learner(child, workload)
        elif kind == "Deployment" and child.get("spec", {}).get("replicas") != 0:
            meta = {"name": name, "namespace": child["metadata"]["namespace"]}
            head = {"apiVersion": child["apiVersion"], "kind": kind, "metadata": meta}
            patches.append(head | {"spec": {"replicas": 0}})
    return patches + _suspend_jobs(children, True)


def _stop_learner(learner: Body, workload: Body | None) -> list[dict[str, Any]]:
    """A merge patch that stops a learner that has not finished, so its pods go and free their
    GPUs: suspended, or a queued one by deactivating its Workload (Kueue suspends it)."""
    state = learner_state(learner)
    if state is None or state.finished:
        return []
    if queued(learner):
        active = workload is not None and kueue.active(workload)
        return [kueue.activate(workload, False)] if workload is not None and active else []
    if _suspended(learner):
        return []
    meta = {"name": learner["metadata"]["name"], "namespace": learner["metadata"]["namespace"]}
    head = {"apiVersion": learner["apiVersion"], "kind": "PyTorchJob", "metadata": meta}
    return [head | {"spec": {"runPolicy": {"suspend": True}}}]


def _step_child(
    children: Mapping[ChildKey, Body], component: str, kind: str = "Job"
) -> Body | None:
    """The child of `kind` that runs one step before the learner, by its component label: the
    prepare or the annotate Job (batch/v1), the GSRM build's PyTorchJob (component build)."""
    return next(
        (
            child
            for (k, _), child in children.items()
            if k == kind and _labels(child).get(COMPONENT_LABEL) == component
        ),
        None,
    )


def _labels(child: Body) -> Mapping[str, str]:
    return child.get("metadata", {}).get("labels") or {}


def _suspend_jobs(children: Mapping[ChildKey, Body], suspend: bool) -> list[dict[str, Any]]:
    """Merge patches that suspend (or resume) the batch Jobs (prepare, annotate) that have not
    finished, whose `spec.suspend` is not `suspend` yet: their pods stop while the servers they
    call are down. At most one runs at a time: each starts after the one before it ended."""
    patches = []
    for (kind, name), child in children.items():
        state = job_state(child) if kind == "Job" else None
        if state is None or not state.running:
            continue
        if bool(child.get("spec", {}).get("suspend")) == suspend:
            continue
        meta = {"name": name, "namespace": child["metadata"]["namespace"]}
        patches.append(
            {"apiVersion": child["apiVersion"], "kind": kind, "metadata": meta}
            | {"spec": {"suspend": suspend}}
        )
    return patches


def _available(deployment: Body | None) -> bool:
    """Serving at its current spec: the controller has seen this generation, wants at least one
    replica and has them all available. `Available=True` alone is not enough: a Deployment at
    zero replicas reports it, and it is stale right after a scale-up."""
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    replicas = deployment.get("spec", {}).get("replicas", 1)
    generation = deployment.get("metadata", {}).get("generation", 0)
    conditions = status.get("conditions") or []
    return (
        replicas > 0
        and status.get("observedGeneration", -1) >= generation
        and status.get("availableReplicas", 0) >= replicas
        and any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
    )


def _queue_of(job: RLKDJob, learner: Body | None) -> str | None:
    """The Kueue LocalQueue the learner is in: the live PyTorchJob's label once it exists (a
    queue named later, e.g. by a label added to the RLKDJob, reaches it only when the spec
    changes and it is rebuilt), else the spec's."""
    if learner is None:
        return queue_name(job)
    return (learner.get("metadata", {}).get("labels") or {}).get(QUEUE_LABEL)


def _running_queued(pytorchjob: Body | None) -> bool:
    """A queued learner that has not finished and that Kueue has not suspended: its Workload
    must be read to stop it."""
    state = learner_state(pytorchjob)
    return (
        queued(pytorchjob)
        and state is not None
        and not state.finished
        and not _suspended(pytorchjob)
    )


def _suspended(pytorchjob: Body | None) -> bool:
    return bool((pytorchjob or {}).get("spec", {}).get("runPolicy", {}).get("suspend"))


def _condition(status: RLKDJobStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions if c.type == type_), None)


def _holds(status: RLKDJobStatus, type_: str) -> bool:
    condition = _condition(status, type_)
    return condition is not None and condition.status == "True"


def _builds(body: Body) -> bool:
    """The raw spec asks for a GSRM build (readable even when the spec is not valid)."""
    gsrm = (body.get("spec") or {}).get("gsrm")
    return isinstance(gsrm, Mapping) and bool(gsrm.get("build"))


def _dump(status: RLKDJobStatus) -> dict[str, Any]:
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
