"""A queued job (spec.learner.queueName), row by row: Kueue owns the learner's suspension and its
admission-time scheduling; the servers start only once Kueue admits the learner."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rlkd.k8s.kueue import QUEUE_LABEL, without_kueue_fields
from rlkd_operator.decide import Observed, needs, needs_poll, resolve
from rlkd_operator.kueue import DEACTIVATING
from tests.operator_fixtures import available, job_body, pytorchjob_in
from tests.unit.test_operator_decide import (
    DEFAULTS,
    INFERENCE,
    PREPARE,
    STORE_OK,
    TEACHER,
    applied,
    conditions,
    job_in,
    step,
)

PJ = ("PyTorchJob", "demo")
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
FLAVOR = {"cloud.example.com/pool": "h100"}


def workload(*conditions_: dict[str, Any], active: bool | None = None) -> dict[str, Any]:
    """Kueue's Workload of the demo learner."""
    body: dict[str, Any] = {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {"name": "pytorchjob-demo-3f2a1", "namespace": "ns1"},
        "spec": {"queueName": "gpu"},
        "status": {"conditions": list(conditions_)},
    }
    if active is not None:
        body["spec"]["active"] = active
    return body


NO_QUOTA = {
    "type": "QuotaReserved",
    "status": "False",
    "reason": "Pending",
    "message": "couldn't assign flavors to pod set master: insufficient quota for nvidia.com/gpu",
}
ADMITTED = {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "admitted"}


def queued_job(**spec: Any) -> dict[str, Any]:
    body = job_body(**spec)
    body["spec"]["learner"] = {**body["spec"]["learner"], "queueName": "gpu"}
    return body


def created() -> tuple[dict[str, Any], dict[Any, dict[str, Any]]]:
    """A queued job whose store checked out: every child created, the learner in the queue."""
    body, decision = step(queued_job(), Observed(store=STORE_OK))
    return body, applied(decision)


def admit(pytorchjob: dict[str, Any]) -> dict[str, Any]:
    """The PyTorchJob as Kueue leaves it on admission: unsuspended, the flavor's node labels and
    tolerations merged into every replica's pod template."""
    admitted = copy.deepcopy(pytorchjob)
    admitted["spec"]["runPolicy"]["suspend"] = False
    for replica in admitted["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        pod["nodeSelector"] = {**pod.get("nodeSelector", {}), **FLAVOR}
        pod["tolerations"] = [*pod.get("tolerations", []), GPU_TAINT]
        replica["template"]["metadata"]["annotations"] = {"kueue.x-k8s.io/workload": "w"}
    return pytorchjob_in(admitted, "Created")


def test_a_queued_job_creates_its_learner_suspended_in_the_queue_and_its_servers_at_zero() -> None:
    body, children = created()
    learner = children[PJ]
    assert learner["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    assert learner["spec"]["runPolicy"]["suspend"] is True
    assert {children[k]["spec"]["replicas"] for k in INFERENCE} == {0}  # no GPUs held
    queued = conditions(body)["Queued"]
    assert queued["status"] == "True" and body["status"]["phase"] == "Provisioning"
    assert conditions(body)["InferenceReady"]["reason"] == "Queued"
    pod = learner["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    waits = pod["initContainers"][0]["command"]
    assert waits[-2:] == [
        "http://demo-gsrm.ns1.svc:8000/health",
        "http://demo-judge.ns1.svc:8000/health",
    ]


@pytest.mark.parametrize(
    ("labels", "field", "queue"),
    [({QUEUE_LABEL: "team-a"}, None, "team-a"), ({QUEUE_LABEL: "team-a"}, "gpu", "gpu")],
)
def test_the_field_wins_over_the_label_and_either_is_propagated(
    labels: dict[str, str], field: str | None, queue: str
) -> None:
    body = job_body()
    body["metadata"]["labels"] = labels
    if field:
        body["spec"]["learner"]["queueName"] = field
    _, decision = step(body, Observed(store=STORE_OK))
    assert applied(decision)[PJ]["metadata"]["labels"][QUEUE_LABEL] == queue


def test_a_queue_label_that_is_no_queue_name_is_a_spec_error_naming_the_label() -> None:
    body = job_body()
    body["metadata"]["labels"] = {QUEUE_LABEL: "Team_A"}
    problems = resolve(body, DEFAULTS).problems  # type: ignore[union-attr]
    assert problems and problems[0].startswith(f"metadata.labels[{QUEUE_LABEL}]")


@pytest.mark.parametrize(
    ("workload_", "reason", "message"),
    [
        (workload(NO_QUOTA), "Pending", NO_QUOTA["message"]),
        (None, "PyTorchJobSuspended", "PyTorchJob demo is suspended."),
    ],
)
def test_a_learner_kueue_keeps_suspended_is_left_so_and_reported_queued(
    workload_: dict[str, Any] | None, reason: str, message: str
) -> None:
    body, children = created()
    children[PJ] = pytorchjob_in(children[PJ], "Suspended", "PyTorchJob demo is suspended.")
    children[PJ]["status"]["conditions"][-1]["reason"] = "PyTorchJobSuspended"
    assert needs(body, children).workload
    body, decision = step(body, Observed(children=children, workload=workload_))
    queued = conditions(body)["Queued"]
    assert (queued["status"], queued["reason"], queued["message"]) == ("True", reason, message)
    assert body["status"]["phase"] == "Provisioning" and message in body["status"]["message"]
    assert decision.apply == () and decision.patch == ()  # nothing flips runPolicy.suspend
    assert needs_poll(body)  # Kueue sends no event the operator watches


def test_admission_starts_the_servers_and_kueues_fields_are_never_patched_away() -> None:
    body, children = created()
    children[PJ] = admit(children[PJ])
    body, decision = step(body, Observed(children=children))
    assert {k for k in applied(decision)} == set(INFERENCE)
    assert {m["spec"]["replicas"] for m in decision.apply} == {1}
    assert conditions(body)["Queued"]["status"] == "False"
    assert conditions(body)["Queued"]["reason"] == "Admitted" and not needs_poll(body)
    assert not needs(body, children).workload
    children.update({k: available(m) for k, m in applied(decision).items()})
    children[PJ] = pytorchjob_in(children[PJ], "Running")
    body, decision = step(body, Observed(children=children))
    assert decision.apply == () and body["status"]["phase"] == "Training"
    # The learner edited by hand: put back, without Kueue's fields.
    container = children[PJ]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    container["containers"][0]["image"] = "evil:latest"
    _, decision = step(body, Observed(children=children))
    (patch,) = decision.apply
    assert "suspend" not in patch["spec"]["runPolicy"]
    template = patch["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert "tolerations" not in template["spec"] and "nodeSelector" not in template["spec"]
    assert "labels" not in template["metadata"]


def test_without_kueue_fields_keeps_the_rest() -> None:
    _, children = created()
    stripped = without_kueue_fields(children[PJ])
    assert stripped["spec"]["runPolicy"] == {"backoffLimit": 3, "cleanPodPolicy": "Running"}
    assert stripped["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"]
    assert children[PJ]["spec"]["runPolicy"]["suspend"] is True  # a copy


def test_eviction_gives_the_servers_gpus_back_and_reports_kueues_reason() -> None:
    body, children = created()
    children[PJ] = admit(children[PJ])
    body, decision = step(body, Observed(children=children))
    children.update({k: available(m) for k, m in applied(decision).items()})
    evicted = {"type": "Evicted", "status": "True", "reason": "Preempted", "message": "by w2"}
    children[PJ] = pytorchjob_in(copy.deepcopy(children[PJ]), "Suspended")
    children[PJ]["spec"]["runPolicy"]["suspend"] = True
    body, decision = step(body, Observed(children=children, workload=workload(evicted)))
    assert {applied(decision)[k]["spec"]["replicas"] for k in INFERENCE} == {0}
    assert PJ not in applied(decision)
    assert (conditions(body)["Queued"]["reason"], body["status"]["phase"]) == (
        "Preempted",
        "Provisioning",
    )


def test_suspend_goes_through_kueue_and_resume_reactivates_the_workload() -> None:
    body, children = created()
    children[PJ] = admit(children[PJ])
    body["spec"] = {**body["spec"], "suspend": True}
    assert needs(body, children).workload
    body, decision = step(body, Observed(children=children, workload=workload(ADMITTED)))
    assert [(p["kind"], p["spec"]) for p in decision.patch] == [("Workload", {"active": False})]
    assert PJ not in applied(decision)  # runPolicy.suspend is Kueue's
    suspended = conditions(body)["Suspended"]
    assert (body["status"]["phase"], suspended["reason"]) == ("Suspended", DEACTIVATING)
    assert "Queued" not in conditions(body) and needs_poll(body)
    # Kueue evicts it: the PyTorchJob suspended, the Workload inactive.
    children[PJ] = copy.deepcopy(children[PJ])
    children[PJ]["spec"]["runPolicy"]["suspend"] = True
    inactive = workload(active=False)
    body, decision = step(body, Observed(children=children, workload=inactive))
    assert decision.patch == () and conditions(body)["Suspended"]["reason"] == "Suspended"
    assert not needs_poll(body)
    body["spec"] = {**body["spec"], "suspend": False}
    body, decision = step(body, Observed(children=children, workload=inactive))
    assert [(p["kind"], p["spec"]) for p in decision.patch] == [("Workload", {"active": True})]
    assert conditions(body)["Queued"]["status"] == "True"


def test_a_spec_broken_while_queued_and_running_deactivates_the_workload() -> None:
    body, children = created()
    children[PJ] = admit(children[PJ])
    body, decision = step(body, Observed(children=children))
    children.update(applied(decision))  # the servers scaled up
    body["spec"] = {**body["spec"], "grpo": {"learningRate": -1}}
    assert needs(body, children, broken=True).workload
    body, decision = step(body, Observed(children=children, workload=workload(ADMITTED)))
    patches = {(p["kind"], p["metadata"]["name"]): p["spec"] for p in decision.patch}
    assert patches == {
        INFERENCE[0]: {"replicas": 0},
        INFERENCE[1]: {"replicas": 0},
        ("Workload", "pytorchjob-demo-3f2a1"): {"active": False},
    }


def test_a_queued_learner_still_running_when_the_job_fails_is_stopped_through_kueue() -> None:
    """A job can end in a reconcile that did not read the Workload (a running queued learner
    needs none), e.g. stalled past spec.learner.maxStallRestarts: the next one reads it and
    deactivates it, so the hung learner's pods go; once Kueue suspends it, nothing is read."""
    body, children = created()
    children[PJ] = pytorchjob_in(admit(children[PJ]), "Running")
    body["status"] = {**body["status"], "phase": "Failed"}
    assert needs(body, children).workload
    body, decision = step(body, Observed(children=children, workload=workload(ADMITTED)))
    assert [(p["kind"], p["spec"]) for p in decision.patch] == [("Workload", {"active": False})]
    children[PJ]["spec"]["runPolicy"]["suspend"] = True  # Kueue stopped it
    assert not needs(body, children).workload
    _, decision = step(body, Observed(children=children))
    assert decision.patch == ()


def test_a_queued_job_that_needs_preparing_prepares_first_then_queues_its_learner() -> None:
    body = queued_job(teacher=TEACHER)
    body, decision = step(body, Observed(store=STORE_OK))
    children = applied(decision)
    assert PJ not in children  # nothing is queued while the teacher side is computed
    for name in ("demo-gsrm", "demo-teacher"):
        children[("Deployment", name)] = available(children[("Deployment", name)])
    body, decision = step(body, Observed(children=children))
    children.update(applied(decision))
    assert PREPARE in children and PJ not in children
    assert body["status"]["phase"] == "Preparing" and "Queued" not in conditions(body)

    children[PREPARE] = job_in(children[PREPARE], "Complete", "CompletionsReached")
    body, decision = step(body, Observed(children=children))
    created = applied(decision)
    # Now the learner goes into its queue, suspended, and every server waits at zero for it.
    assert created[PJ]["spec"]["runPolicy"]["suspend"] is True
    assert {
        name: m["spec"]["replicas"] for (kind, name), m in created.items() if kind == "Deployment"
    } == {"demo-gsrm": 0, "demo-teacher": 0}
    assert conditions(body)["Queued"]["status"] == "True"
    assert body["status"]["phase"] == "Provisioning"
