"""The operator's decide step, table by table: phases, conditions, progress, children, events."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rlkd.k8s import OperatorDefaults
from rlkd.spec.job import StorageSpec
from rlkd.spec.progress import PrepareSummary, ProgressDocument
from rlkd_operator.decide import (
    ApplyFailure,
    Decision,
    Observed,
    StoreCheck,
    contains,
    decide,
    needs,
    needs_poll,
    resolve,
)
from tests.operator_fixtures import STORAGE, available, job_body, pytorchjob_in

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
DEFAULTS = OperatorDefaults()
STORE_OK = StoreCheck(True, "Ready", "store, bucket and dataset are present")
STORE_DOWN = StoreCheck(False, "StoreUnavailable", "cannot reach S3 endpoint http://x; check it")
INFERENCE = [("Deployment", "demo-gsrm"), ("Deployment", "demo-judge")]


def step(
    body: dict[str, Any],
    observed: Observed,
    now: datetime = T0,
    defaults: OperatorDefaults = DEFAULTS,
) -> tuple[dict, Decision]:
    """One reconcile: decide, then the body as the API server holds it afterwards."""
    decision = decide(body, resolve(body, defaults), observed, defaults, now)
    return {**body, "status": decision.status}, decision


def applied(decision: Decision) -> dict[tuple[str, str], dict[str, Any]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in decision.apply}


def conditions(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in body["status"].get("conditions", [])}


def provisioned(
    name: str = "demo", *, defaults: OperatorDefaults = DEFAULTS, **spec: Any
) -> tuple[dict, dict]:
    """A job whose store checked out and whose children all exist, inference Available."""
    body, decision = step(job_body(name, **spec), Observed(store=STORE_OK), defaults=defaults)
    children = {
        key: available(m) if key[0] == "Deployment" else m for key, m in applied(decision).items()
    }
    body, decision = step(body, Observed(children=children), defaults=defaults)
    children.update(applied(decision))
    # The learner seen: waiting for it to start.
    body, _ = step(body, Observed(children=children), defaults=defaults)
    return body, children


def training(
    state: str = "Running", *, defaults: OperatorDefaults = DEFAULTS, **spec: Any
) -> tuple[dict, dict]:
    body, children = provisioned(defaults=defaults, **spec)
    children[("PyTorchJob", "demo")] = pytorchjob_in(children[("PyTorchJob", "demo")], state)
    return body, children


def progress(**fields: Any) -> ProgressDocument:
    return ProgressDocument.model_validate(fields, by_name=True)


def test_a_new_job_is_pending_until_the_store_is_checked() -> None:
    body, decision = step(job_body(), Observed())
    assert body["status"]["phase"] == "Pending" and decision.apply == ()
    assert needs(job_body(), {}).store_check and needs_poll(body)


def test_a_store_problem_keeps_the_job_provisioning_with_the_reason() -> None:
    body, decision = step(job_body(), Observed(store=STORE_DOWN))
    assert body["status"]["phase"] == "Provisioning" and decision.apply == ()
    store = conditions(body)["StoreReady"]
    assert (store["status"], store["reason"]) == ("False", "StoreUnavailable")
    assert store["message"] == STORE_DOWN.message == body["status"]["message"]
    assert ("Warning", "StoreUnavailable") in [(e.type, e.reason) for e in decision.events]
    assert needs_poll(body) and needs(body, {}).store_check


def test_store_ready_creates_config_and_inference_but_not_the_learner() -> None:
    body, decision = step(job_body(), Observed(store=STORE_OK))
    kinds = [m["kind"] for m in decision.apply]
    assert kinds == [
        "ConfigMap",
        "NetworkPolicy",
        "Service",
        "Deployment",
        "Service",
        "Deployment",
    ]
    assert body["status"]["phase"] == "Provisioning"
    assert conditions(body)["InferenceReady"]["status"] == "False"
    assert [(e.type, e.reason) for e in decision.events] == [("Normal", "Provisioning")]
    owner = decision.apply[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["uid"]) == ("RLKDJob", "uid-demo")
    assert not needs(body, {}).store_check and not needs_poll(body)


def test_the_learner_comes_only_when_every_deployment_is_available() -> None:
    body, decision = step(job_body(), Observed(store=STORE_OK))
    children = applied(decision)
    one_up = {**children, INFERENCE[0]: available(children[INFERENCE[0]])}
    body, decision = step(body, Observed(children=one_up))
    assert decision.apply == ()  # nothing changed: nothing to patch
    assert "demo-judge" in conditions(body)["InferenceReady"]["message"]
    all_up = {**one_up, INFERENCE[1]: available(children[INFERENCE[1]])}
    body, decision = step(body, Observed(children=all_up))
    assert list(applied(decision)) == [("PyTorchJob", "demo")]
    assert conditions(body)["InferenceReady"]["status"] == "True"


def test_reconciling_the_same_world_again_changes_nothing() -> None:
    body, children = provisioned()
    again, decision = step(body, Observed(children=children), T0 + timedelta(hours=1))
    assert decision.apply == () and decision.events == () and again["status"] == body["status"]


def edited(child: dict[str, Any], *path: Any, value: Any) -> dict[str, Any]:
    """A deep copy of `child` with the value at `path` replaced (an edit by hand)."""
    child = copy.deepcopy(child)
    node = child
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return child


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "replicas"), 0),  # kubectl scale --replicas=0
        (("spec", "template", "spec", "containers", 0, "image"), "evil:latest"),
        (("metadata", "labels"), {}),
    ],
)
def test_a_child_edited_by_hand_is_put_back(path: tuple[Any, ...], value: Any) -> None:
    body, children = training()
    children[INFERENCE[0]] = edited(children[INFERENCE[0]], *path, value=value)
    _, decision = step(body, Observed(children=children))
    assert list(applied(decision)) == [INFERENCE[0]]
    assert decision.apply[0]["spec"]["replicas"] == 1


def test_server_defaults_on_a_child_are_not_a_difference() -> None:
    body, children = training()
    pod = ("spec", "template", "spec")
    children[INFERENCE[0]] = edited(children[INFERENCE[0]], *pod, "dnsPolicy", value="ClusterFirst")
    container = children[INFERENCE[0]]["spec"]["template"]["spec"]["containers"][0]
    container["terminationMessagePath"] = "/dev/termination-log"
    _, decision = step(body, Observed(children=children))
    assert decision.apply == ()


@pytest.mark.parametrize(
    ("live", "desired", "holds"),
    [
        ({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2}}, True),
        ({"a": 1}, {"a": 2}, False),
        ({"a": 1}, {"b": None}, True),  # a merge patch's null: absent
        ({"a": [{"x": 1, "y": 2}]}, {"a": [{"x": 1}]}, True),
        ({"a": [{"x": 1}, {"x": 2}]}, {"a": [{"x": 1}]}, False),  # an element to drop
        ({"a": [{"x": 2}]}, {"a": [{"x": 1}]}, False),
        ({"a": "1"}, {"a": {"b": 1}}, False),
        # As the API server stores them: quantities canonical, Go zero values dropped.
        ({"limits": {"nvidia.com/gpu": "1"}}, {"limits": {"nvidia.com/gpu": 1}}, True),
        ({"requests": {"cpu": "500m", "memory": "1Gi"}}, {"requests": {"cpu": 0.5}}, True),
        ({"requests": {"memory": "1Gi"}}, {"requests": {"memory": "1024Mi"}}, True),
        ({"requests": {"cpu": "1"}}, {"requests": {"cpu": "1000m"}}, True),
        ({"limits": {"nvidia.com/gpu": "2"}}, {"limits": {"nvidia.com/gpu": 1}}, False),
        ({"emptyDir": {"sizeLimit": "2Gi"}}, {"emptyDir": {"sizeLimit": "2048Mi"}}, True),
        ({"cpu": "1"}, {"cpu": 1}, False),  # only quantities are compared by value
        ({"a": 1}, {"readOnly": False, "args": [], "env": {}, "n": 0, "s": ""}, True),
        ({"replicas": 1}, {"replicas": 0}, False),  # present: compared
        ({"a": 1}, {"b": True}, False),
    ],
)
def test_contains(live: Any, desired: Any, holds: bool) -> None:
    assert contains(live, desired) is holds


def test_training_maps_progress_and_keeps_transition_times() -> None:
    body, children = training()
    doc = progress(
        step=5,
        total_steps=20,
        mean_reward=21.5,
        rewards={"accuracy": 0.5},
        reward_errors={"timeout": 2},
        checkpoint="s3://rlkd-test/rlkd/ns1/demo/checkpoints/c-5",
    )
    body, decision = step(
        body, Observed(children=children, progress=doc), T0 + timedelta(minutes=1)
    )
    status = body["status"]
    assert (
        status["phase"] == "Training"
        and status["message"] == "training: step 5/20, mean reward 21.5"
    )
    assert status["progress"] == {
        "step": 5,
        "totalSteps": 20,
        "meanReward": 21.5,
        "rewards": {"accuracy": 0.5},
        "rewardErrors": {"timeout": 2},
    }
    assert status["artifacts"] == {
        "checkpoint": doc.checkpoint,
        "progress": "s3://rlkd-test/rlkd/ns1/demo/progress.json",
    }
    assert status["startTime"] == "2026-01-01T10:01:00Z" and needs_poll(body)
    assert [e.reason for e in decision.events] == ["Training"]
    store_changed_at = conditions(body)["StoreReady"]["lastTransitionTime"]
    later, _ = step(body, Observed(children=children, progress=doc), T0 + timedelta(hours=2))
    assert (
        conditions(later)["StoreReady"]["lastTransitionTime"]
        == store_changed_at
        == "2026-01-01T10:00:00Z"
    )
    assert later["status"]["startTime"] == status["startTime"]


@pytest.mark.parametrize(
    ("evaluation", "stage", "phase"),
    [
        ({}, "evaluating", "Evaluating"),
        (None, "evaluating", "Training"),
        ({}, "training", "Training"),
    ],
)
def test_evaluating_follows_the_progress_stage(evaluation: Any, stage: str, phase: str) -> None:
    extra = {} if evaluation is None else {"evaluation": evaluation}
    body, children = training(**extra)
    body, _ = step(body, Observed(children=children, progress=progress(stage=stage)))
    assert body["status"]["phase"] == phase


def test_a_learner_done_after_its_last_evaluation_does_not_step_back_to_training() -> None:
    """Its progress says finished while its pods still exit: Evaluating stays until Succeeded."""
    body, children = training(evaluation={})
    body, _ = step(body, Observed(children=children, progress=progress(stage="evaluating")))
    doc = progress(stage="finished", model=MODEL, step=20)
    body, _ = step(body, Observed(children=children, progress=doc, model_present=True))
    assert body["status"]["phase"] == "Evaluating"
    assert body["status"]["message"].startswith("the learner finished")


MODEL = "s3://rlkd-test/rlkd/ns1/demo/model/"


@pytest.mark.parametrize(
    ("stage", "model", "present", "phase"),
    [
        ("finished", MODEL, True, "Succeeded"),
        ("finished", MODEL, False, "Training"),
        ("evaluating", MODEL, True, "Training"),
        ("finished", None, True, "Training"),
    ],
)
def test_succeeded_needs_the_learner_the_progress_and_the_model(
    stage: str, model: str | None, present: bool, phase: str
) -> None:
    body, children = training("Succeeded")
    doc = progress(stage=stage, model=model, step=20, evaluations={"after": {"accuracy": 0.41}})
    body, decision = step(body, Observed(children=children, progress=doc, model_present=present))
    assert body["status"]["phase"] == phase
    if phase == "Succeeded":
        assert body["status"]["artifacts"]["model"] == MODEL
        assert body["status"]["completionTime"] == "2026-01-01T10:00:00Z"
        assert "accuracy=0.41" in body["status"]["message"]
        assert conditions(body)["Complete"]["status"] == "True"
        scaled = {
            k: m["spec"]["replicas"] for k, m in applied(decision).items() if k[0] == "Deployment"
        }
        assert scaled == {INFERENCE[0]: 0, INFERENCE[1]: 0}


@pytest.mark.parametrize("end", ["Succeeded", "Failed"])
def test_a_finished_job_keeps_its_end_when_its_spec_stops_resolving(end: str) -> None:
    """E.g. the operator's default store, which the job relied on, is removed from its settings:
    the job already ended; its phase, times, artifacts and Events stay as they are."""
    with_store = OperatorDefaults(storage=StorageSpec.model_validate(STORAGE))
    body, children = training(end, defaults=with_store, storage=None)
    doc = progress(stage="finished", model=MODEL, step=20)
    observed = Observed(children=children, progress=doc, model_present=True)
    body, decision = step(body, observed, defaults=with_store)
    assert body["status"]["phase"] == end
    children.update(applied(decision))  # inference scaled to zero
    later, decision = step(body, Observed(children=children), T0 + timedelta(hours=1))
    assert later["status"] == body["status"]
    assert decision.events == () and decision.apply == () and decision.patch == ()


def test_missing_artifacts_fail_the_job_after_a_grace_period() -> None:
    body, children = training("Succeeded")
    body, _ = step(body, Observed(children=children), T0 + timedelta(minutes=5))
    assert body["status"]["phase"] == "Training"
    body, _ = step(body, Observed(children=children), T0 + timedelta(minutes=11))
    assert (body["status"]["phase"], conditions(body)["Failed"]["reason"]) == (
        "Failed",
        "ArtifactsMissing",
    )


def test_a_failed_learner_fails_the_job_with_its_reason_and_scales_inference_down() -> None:
    body, children = provisioned()
    pj = ("PyTorchJob", "demo")
    children[pj] = pytorchjob_in(children[pj], "Failed", "pod demo-master-0 OOMKilled")
    body, decision = step(body, Observed(children=children))
    assert body["status"]["phase"] == "Failed"
    failed = conditions(body)["Failed"]
    assert (failed["reason"], "OOMKilled" in failed["message"]) == ("PyTorchJobFailed", True)
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "Failed")]
    assert {m["spec"]["replicas"] for m in decision.apply if m["kind"] == "Deployment"} == {0}
    assert not needs_poll(body)


def test_a_failed_learner_s_own_reason_reaches_the_status() -> None:
    body, children = provisioned()
    pj = ("PyTorchJob", "demo")
    children[pj] = pytorchjob_in(children[pj], "Failed", "1 Master replica(s) failed")
    own = "structure rewards failed for 60% of completions (limit 50%): gsrm timeout x 12"
    doc = ProgressDocument(stage="training", step=3, failure=own)
    body, _ = step(body, Observed(children=children, progress=doc))
    message = conditions(body)["Failed"]["message"]
    assert message == f"the learner failed: 1 Master replica(s) failed; {own}"


def test_suspend_stops_the_learner_and_scales_inference_to_zero_and_resume_undoes_it() -> None:
    body, children = training()
    body["spec"] = {**body["spec"], "suspend": True}
    body, decision = step(body, Observed(children=children))
    assert body["status"]["phase"] == "Suspended"
    changed = applied(decision)
    assert changed[("PyTorchJob", "demo")]["spec"]["runPolicy"]["suspend"] is True
    assert {changed[k]["spec"]["replicas"] for k in INFERENCE} == {0}
    children.update(changed)
    body["spec"] = {**body["spec"], "suspend": False}
    body, decision = step(body, Observed(children=children))
    resumed = applied(decision)
    assert {resumed[k]["spec"]["replicas"] for k in INFERENCE} == {1}
    assert conditions(body)["Suspended"]["status"] == "False"
    children.update({k: available(resumed[k]) for k in INFERENCE})
    body, decision = step(body, Observed(children=children))
    assert applied(decision)[("PyTorchJob", "demo")]["spec"]["runPolicy"]["suspend"] is False


def test_resume_keeps_the_learner_suspended_until_inference_is_really_available() -> None:
    body, children = training()
    body["spec"] = {**body["spec"], "suspend": True}
    body, decision = step(body, Observed(children=children))
    children.update(applied(decision))
    for key in INFERENCE:  # the controller has scaled them down: Available=True at 0 replicas
        children[key] = available(children[key])
    body["spec"] = {**body["spec"], "suspend": False}
    body, decision = step(body, Observed(children=children))
    resumed = applied(decision)
    assert {resumed[k]["spec"]["replicas"] for k in INFERENCE} == {1}
    assert ("PyTorchJob", "demo") not in resumed  # still suspended, as it is
    stale = {key: children[key]["status"] for key in INFERENCE}
    children.update(resumed)
    for key in INFERENCE:  # scaled up; the status is the old one (Available=True, stale)
        children[key] = {**resumed[key], "status": stale[key]}
        children[key]["metadata"] = {**children[key]["metadata"], "generation": 3}
    body, decision = step(body, Observed(children=children))
    assert decision.apply == () and body["status"]["phase"] == "Provisioning"
    assert conditions(body)["InferenceReady"]["status"] == "False"
    children.update({key: available(children[key]) for key in INFERENCE})
    body, decision = step(body, Observed(children=children))
    assert applied(decision)[("PyTorchJob", "demo")]["spec"]["runPolicy"]["suspend"] is False


def test_an_unavailable_server_does_not_suspend_a_running_learner() -> None:
    body, children = training()
    children[INFERENCE[0]] = {**children[INFERENCE[0]], "status": {}}
    body, decision = step(body, Observed(children=children))
    assert decision.apply == () and body["status"]["phase"] == "Training"


def test_suspending_before_the_learner_exists_does_not_create_it() -> None:
    body, decision = step(job_body(suspend=True), Observed(store=STORE_OK))
    assert body["status"]["phase"] == "Suspended"
    assert ("PyTorchJob", "demo") not in applied(decision)


@pytest.mark.parametrize(
    ("ttl", "after", "delete"), [(60, 59, False), (60, 60, True), (None, 999, False)]
)
def test_ttl_deletes_a_finished_job(ttl: int | None, after: int, delete: bool) -> None:
    body, children = provisioned(ttlSecondsAfterFinished=ttl)
    pj = ("PyTorchJob", "demo")
    children[pj] = pytorchjob_in(children[pj], "Failed")
    body, decision = step(body, Observed(children=children))
    assert not decision.delete
    _, decision = step(body, Observed(children=children), T0 + timedelta(seconds=after))
    assert decision.delete is delete and decision.events == ()


@pytest.mark.parametrize(
    "spec",
    [
        {"grpo": {"learningRate": -1}},
        {"storage": None},
        {"learner": "four"},
        {"pods": {"labels": {"rlkd.ai/job": "another"}}},  # would join another job's servers
    ],
)
def test_a_spec_that_cannot_be_built_fails_with_a_reason(spec: dict[str, Any]) -> None:
    body = job_body(**spec)
    body, decision = step(body, Observed(store=STORE_OK))
    failed = conditions(body)["Failed"]
    assert (body["status"]["phase"], failed["reason"]) == ("Failed", "InvalidSpec")
    assert decision.apply == () and failed["message"].startswith("the spec cannot be built: spec.")


def merged(live: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`live` after a JSON merge patch without nulls, as the API server applies it."""
    out = dict(live)
    for key, value in patch.items():
        out[key] = merged(live.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def test_a_spec_broken_while_running_gives_the_gpus_back() -> None:
    body, children = training()
    body["spec"] = {**body["spec"], "grpo": {"learningRate": -1}}
    body["metadata"] = {**body["metadata"], "generation": 2}
    body, decision = step(body, Observed(children=children))
    assert body["status"]["phase"] == "Failed" and decision.apply == ()
    patches = {(p["kind"], p["metadata"]["name"]): p["spec"] for p in decision.patch}
    assert patches == {
        INFERENCE[0]: {"replicas": 0},
        INFERENCE[1]: {"replicas": 0},
        ("PyTorchJob", "demo"): {"runPolicy": {"suspend": True}},
    }
    for patch in decision.patch:
        key = (patch["kind"], patch["metadata"]["name"])
        children[key] = merged(children[key], patch)
    _, decision = step(body, Observed(children=children))
    assert decision.patch == () and decision.apply == ()


def test_a_fixed_spec_is_tried_again() -> None:
    body, _ = step(job_body(grpo={"learningRate": -1}), Observed())
    body["spec"] = job_body()["spec"]
    body["metadata"] = {**body["metadata"], "generation": 2}
    body, _ = step(body, Observed(store=STORE_OK))
    assert body["status"]["phase"] == "Provisioning" and body["status"]["observedGeneration"] == 2
    assert {c["observedGeneration"] for c in body["status"]["conditions"]} == {2}


def test_a_running_learner_is_not_gated_by_a_new_store_check() -> None:
    body, children = training()
    body["spec"] = {**body["spec"], "suspend": True}
    body["metadata"] = {**body["metadata"], "generation": 2}
    assert needs(body, children).store_check is False and needs(body, {}).store_check is True
    body["spec"] = {**body["spec"], "suspend": False}
    body, _ = step(body, Observed(children=children, store=STORE_DOWN))
    assert body["status"]["phase"] == "Training"


REJECTED = ApplyFailure("Invalid", "the API server rejected Deployment ns1/demo-gsrm: bad", True)
FORBIDDEN = ApplyFailure(
    "Forbidden", "the API server refused Deployment ns1/demo-gsrm: quota", permanent=False
)


def test_a_refused_child_is_a_condition_and_a_warning_and_clears_when_applied() -> None:
    body, decision = step(job_body(), Observed(store=STORE_OK, failure=FORBIDDEN))
    failed = conditions(body)["ApplyFailed"]
    assert (failed["status"], failed["reason"], failed["message"]) == (
        "True",
        "Forbidden",
        FORBIDDEN.message,
    )
    assert body["status"]["phase"] == "Provisioning" and decision.apply == ()
    assert body["status"]["message"] == FORBIDDEN.message
    assert ("Warning", "Forbidden") in [(e.type, e.reason) for e in decision.events]
    again, decision = step(body, Observed(failure=FORBIDDEN), T0 + timedelta(minutes=1))
    assert again["status"] == body["status"] and decision.events == ()  # no second Warning
    body, decision = step(body, Observed())
    assert "ApplyFailed" not in conditions(body) and len(decision.apply) == 6


def test_a_rejected_child_fails_the_job_until_the_spec_changes() -> None:
    body, decision = step(job_body(), Observed(store=STORE_OK, failure=REJECTED))
    failed = conditions(body)["Failed"]
    assert (body["status"]["phase"], failed["reason"]) == ("Failed", "ApplyRejected")
    assert failed["message"] == REJECTED.message and not needs_poll(body)
    again, decision = step(body, Observed())
    assert again["status"] == body["status"] and decision.apply == ()
    body["metadata"] = {**body["metadata"], "generation": 2}
    body, decision = step(body, Observed(store=STORE_OK))
    assert body["status"]["phase"] == "Provisioning" and len(decision.apply) == 6


def test_a_finished_job_keeps_its_end_when_scaling_down_is_rejected() -> None:
    body, children = training("Succeeded")
    doc = progress(stage="finished", model=MODEL, step=20)
    observed = Observed(children=children, progress=doc, model_present=True, failure=REJECTED)
    body, _ = step(body, observed)
    assert body["status"]["phase"] == "Succeeded" and "Failed" not in conditions(body)
    assert conditions(body)["ApplyFailed"]["reason"] == "Invalid"


# --- Preparing: the prepare Job before the learner ---------------------------------------------

TEACHER = {"source": "model", "model": {"model": "store://models/teacher"}}
PREPARE = ("Job", "demo-prepare")


def job_in(job: dict[str, Any], kind: str | None, reason: str = "", message: str = "") -> dict:
    """The prepare Job as the Job controller reports it: running (None), Complete or Failed."""
    conditions = [{"type": kind, "status": "True", "reason": reason, "message": message}]
    return {**job, "status": {"conditions": conditions if kind else []}}


def replicas(decision: Decision) -> dict[str, int]:
    return {
        name: m["spec"]["replicas"]
        for (kind, name), m in applied(decision).items()
        if kind == "Deployment"
    }


def preparing() -> tuple[dict, dict]:
    """A job with a teacher model whose prepare Job was just created."""
    body, decision = step(job_body(teacher=TEACHER), Observed(store=STORE_OK))
    children = applied(decision)
    for name in ("demo-gsrm", "demo-teacher"):
        children[("Deployment", name)] = available(children[("Deployment", name)])
    body, decision = step(body, Observed(children=children))
    children.update(applied(decision))
    return body, children


def test_a_job_to_prepare_starts_only_the_servers_prepare_calls_then_the_job() -> None:
    body, decision = step(job_body(teacher=TEACHER), Observed(store=STORE_OK))
    # The judge is the learner's: it waits at zero replicas, holding no GPU while prepare runs.
    assert replicas(decision) == {"demo-gsrm": 1, "demo-judge": 0, "demo-teacher": 1}
    assert PREPARE not in applied(decision) and ("PyTorchJob", "demo") not in applied(decision)
    assert body["status"]["phase"] == "Provisioning"
    assert "demo-teacher" in conditions(body)["InferenceReady"]["message"]

    body, children = preparing()
    assert PREPARE in children and ("PyTorchJob", "demo") not in children
    assert body["status"]["phase"] == "Preparing"
    assert conditions(body)["Prepared"]["status"] == "False"
    assert conditions(body)["InferenceReady"]["status"] == "True"
    assert [e.reason for e in step(body, Observed(children=children))[1].events] == []


def test_a_running_prepare_job_is_left_alone_and_no_learner_comes() -> None:
    body, children = preparing()
    children[PREPARE] = job_in(children[PREPARE], None)
    again, decision = step(body, Observed(children=children))
    assert decision.apply == () and decision.patch == ()
    assert again["status"]["phase"] == "Preparing"
    assert not needs(again, children).prepared and not needs_poll(again)


def test_after_a_successful_prepare_the_teacher_scales_to_zero_and_the_learner_follows() -> None:
    body, children = preparing()
    children[PREPARE] = job_in(children[PREPARE], "Complete", "CompletionsReached")
    body, decision = step(body, Observed(children=children))
    assert replicas(decision) == {"demo-judge": 1, "demo-teacher": 0}
    assert ("PyTorchJob", "demo") not in applied(decision)  # the judge is not up yet
    assert conditions(body)["Prepared"]["status"] == "True"
    assert body["status"]["phase"] == "Provisioning"
    children.update(applied(decision))
    # The learner waits for its own servers only: the teacher at zero is not among them.
    children[("Deployment", "demo-judge")] = available(children[("Deployment", "demo-judge")])
    body, decision = step(body, Observed(children=children))
    assert list(applied(decision)) == [("PyTorchJob", "demo")]
    children.update(applied(decision))
    children[("PyTorchJob", "demo")] = pytorchjob_in(children[("PyTorchJob", "demo")], "Running")
    body, decision = step(body, Observed(children=children))
    assert body["status"]["phase"] == "Training" and decision.apply == ()
    del children[PREPARE]  # gone (deleted by hand): never created again once the learner exists
    assert step(body, Observed(children=children))[1].apply == ()


def test_a_failed_prepare_fails_the_job_with_the_jobs_reason_and_the_counts() -> None:
    body, children = preparing()
    message = "Job has reached the specified backoff limit"
    children[PREPARE] = job_in(children[PREPARE], "Failed", "BackoffLimitExceeded", message)
    assert needs(body, children).prepared
    summary = PrepareSummary(
        finished=True, examples=64, sampled=60, kept=40, dropped=20, failures={"timeout": 4}
    )
    body, decision = step(body, Observed(children=children, prepared=summary))
    failed = conditions(body)["Failed"]
    assert body["status"]["phase"] == "Failed" and failed["reason"] == "BackoffLimitExceeded"
    assert message in failed["message"] and "kept 40, dropped 20" in failed["message"]
    assert "failed: timeout 4" in failed["message"]
    assert conditions(body)["Prepared"]["reason"] == "BackoffLimitExceeded"
    assert set(replicas(decision).values()) == {0}  # every server gives its GPUs back
    assert ("PyTorchJob", "demo") not in applied(decision)
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "Failed")]
    children.update(applied(decision))
    later, decision = step(body, Observed(children=children), T0 + timedelta(hours=1))
    assert later["status"] == body["status"] and decision.apply == ()  # finished: never changes
    assert not needs(later, children).prepared


def test_a_suspended_job_suspends_its_running_prepare_job_and_resumes_it() -> None:
    body, children = preparing()
    suspended = {**body, "spec": {**body["spec"], "suspend": True}}
    suspended, decision = step(suspended, Observed(children=children))
    assert suspended["status"]["phase"] == "Suspended"
    assert [(p["kind"], p["spec"]) for p in decision.patch] == [("Job", {"suspend": True})]
    children[PREPARE] = edited(children[PREPARE], "spec", "suspend", value=True)
    for key, manifest in applied(decision).items():
        children[key] = manifest  # servers at zero
    resumed = {**suspended, "spec": {**suspended["spec"], "suspend": False}}
    resumed, decision = step(resumed, Observed(children=children))
    assert decision.patch == ()  # its servers are not back yet: the Job stays suspended
    assert replicas(decision) == {"demo-gsrm": 1, "demo-teacher": 1}
    for key, manifest in applied(decision).items():
        children[key] = available(manifest) if key[0] == "Deployment" else manifest
    resumed, decision = step(resumed, Observed(children=children))
    assert [(p["kind"], p["spec"]) for p in decision.patch] == [("Job", {"suspend": False})]
    assert resumed["status"]["phase"] == "Preparing"


def test_an_invalid_spec_suspends_a_running_prepare_job() -> None:
    body, children = preparing()
    broken = {**body, "spec": {**body["spec"], "student": {}}}
    _, decision = step(broken, Observed(children=children))
    patched = {(p["kind"], p["metadata"]["name"]): p["spec"] for p in decision.patch}
    assert patched[PREPARE] == {"suspend": True}
