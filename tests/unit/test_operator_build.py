"""The operator's decide step for a job that builds its GSRM (spec.gsrm.build): the annotator and
the annotate Job (Annotating), the build's PyTorchJob (BuildingGSRM), then the usual run on the
built GSRM; failures quoting the build's reports; a build found done in the store is skipped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rlkd.spec.progress import AnnotateSummary, ProgressDocument
from rlkd_operator.decide import Observed, needs, needs_poll
from rlkd_operator.gsrm_build import GSRMBuildSeen
from tests.operator_fixtures import MISSED_GATE, available, job_body, pytorchjob_in
from tests.unit.test_operator_decide import (
    STORE_OK,
    T0,
    applied,
    conditions,
    edited,
    job_in,
    replicas,
    step,
)

BUILD = {"baseModel": "store://models/base", "annotator": {"model": "store://models/annotator"}}
ANNOTATE = ("Job", "demo-annotate")
BUILDER = ("PyTorchJob", "demo-build")
GSRM = ("Deployment", "demo-gsrm")
NOTHING = GSRMBuildSeen()
"""The store holds no build yet."""
FINISHED = GSRMBuildSeen(ProgressDocument(stage="finished", step=10), model_present=True)
"""The store holds a finished build and the model at gsrm.model."""


def build_job(**build: Any) -> dict[str, Any]:
    """A job that builds its GSRM from the teacher's paths in the dataset (a vLLM annotator)."""
    gsrm = {"model": "store://models/gsrm-built", "build": {**BUILD, **build}}
    return job_body(teacher={"source": "dataset"}, gsrm=gsrm)


def seen(children: dict, decision: Any) -> dict:
    """`children` after the decision's children were applied, Deployments made available."""
    for key, manifest in applied(decision).items():
        children[key] = available(manifest) if key[0] == "Deployment" else manifest
    return children


def annotating(**build: Any) -> tuple[dict, dict]:
    """A build job whose annotate Job was just created (the annotator server is up)."""
    body, decision = step(build_job(**build), Observed(store=STORE_OK, gsrm_build=NOTHING))
    children = seen({}, decision)
    body, decision = step(body, Observed(children=children, gsrm_build=NOTHING))
    return body, seen(children, decision)


def building(**build: Any) -> tuple[dict, dict]:
    """A build job whose annotation succeeded and whose build PyTorchJob was just created."""
    body, children = annotating(**build)
    children[ANNOTATE] = job_in(children[ANNOTATE], "Complete", "CompletionsReached")
    body, decision = step(body, Observed(children=children, gsrm_build=NOTHING))
    return body, seen(children, decision)


def test_a_build_starts_with_the_annotator_alone_and_no_gsrm_server() -> None:
    body = build_job()
    assert needs(body, {}).gsrm_build and needs_poll(body)
    body, decision = step(body, Observed(store=STORE_OK, gsrm_build=NOTHING))
    assert replicas(decision) == {"demo-annotator": 1, "demo-judge": 0}
    assert GSRM not in applied(decision) and ("Service", "demo-gsrm") not in applied(decision)
    assert ANNOTATE not in applied(decision)  # the annotator is not up yet
    assert body["status"]["phase"] == "Provisioning"
    assert conditions(body)["GSRMBuilt"]["status"] == "False"
    assert "demo-annotator" in conditions(body)["InferenceReady"]["message"]


def test_annotating_once_the_annotator_is_available() -> None:
    body, children = annotating()
    assert ANNOTATE in children and BUILDER not in children and GSRM not in children
    assert body["status"]["phase"] == "Annotating"
    assert conditions(body)["GSRMBuilt"]["reason"] == "Annotating"
    children[ANNOTATE] = job_in(children[ANNOTATE], None)
    again, decision = step(body, Observed(children=children, gsrm_build=NOTHING))
    assert decision.apply == () and decision.patch == () and decision.events == ()
    assert again["status"] == body["status"]


def test_annotation_done_frees_the_annotator_and_creates_the_build() -> None:
    body, children = annotating()
    children[ANNOTATE] = job_in(children[ANNOTATE], "Complete", "CompletionsReached")
    body, decision = step(body, Observed(children=children, gsrm_build=NOTHING))
    assert replicas(decision) == {"demo-annotator": 0}
    assert BUILDER in applied(decision) and GSRM not in applied(decision)
    assert body["status"]["phase"] == "BuildingGSRM" and needs_poll(body)
    assert [e.reason for e in decision.events] == ["BuildingGSRM"]


def test_the_build_reports_its_training_step() -> None:
    body, children = building()
    children[BUILDER] = pytorchjob_in(children[BUILDER], "Running")
    progress = GSRMBuildSeen(ProgressDocument(stage="training", step=3, total_steps=10))
    body, decision = step(body, Observed(children=children, gsrm_build=progress))
    assert body["status"]["message"] == "building the GSRM: training, step 3/10"
    assert decision.apply == ()


@pytest.mark.parametrize(
    ("doc", "model", "built"),
    [
        (FINISHED.progress, True, True),
        (FINISHED.progress, False, False),  # the model is not at gsrm.model (yet)
        (ProgressDocument(stage="training"), True, False),
        (ProgressDocument(stage="finished", failure="gate failed"), True, False),
        (None, False, False),
    ],
)
def test_built_needs_a_finished_build_without_failure_and_the_model(
    doc: ProgressDocument | None, model: bool, built: bool
) -> None:
    assert GSRMBuildSeen(doc, model).built is built


def test_after_a_successful_build_the_gsrm_is_served_from_the_store_and_the_run_goes_on() -> None:
    body, children = building()
    children[BUILDER] = pytorchjob_in(children[BUILDER], "Succeeded")
    body, decision = step(body, Observed(children=children, gsrm_build=FINISHED))
    assert conditions(body)["GSRMBuilt"]["status"] == "True"
    assert "s3://rlkd-test/rlkd/models/gsrm-built" in conditions(body)["GSRMBuilt"]["message"]
    # Now the GSRM is created, for prepare to decompose the teacher's paths with it.
    assert replicas(decision) == {"demo-gsrm": 1}
    assert body["status"]["phase"] == "Provisioning"
    assert not needs(body, children).gsrm_build  # known built: never read again
    children = seen(children, decision)
    body, decision = step(body, Observed(children=children))
    assert body["status"]["phase"] == "Preparing" and ("Job", "demo-prepare") in applied(decision)
    assert BUILDER not in applied(decision) and ANNOTATE not in applied(decision)


def test_a_build_whose_gate_still_runs_is_not_built_though_training_finished() -> None:
    body, children = building()
    children[BUILDER] = pytorchjob_in(children[BUILDER], "Running")
    body, decision = step(body, Observed(children=children, gsrm_build=FINISHED))
    assert body["status"]["phase"] == "BuildingGSRM" and GSRM not in applied(decision)


def test_a_successful_build_waits_for_its_model_then_fails_without_it() -> None:
    body, children = building()
    children[BUILDER] = pytorchjob_in(children[BUILDER], "Succeeded")  # completed at T0
    waiting = GSRMBuildSeen(ProgressDocument(stage="finished"), model_present=False)
    body, decision = step(body, Observed(children=children, gsrm_build=waiting))
    assert body["status"]["phase"] == "BuildingGSRM" and "waiting" in body["status"]["message"]
    assert GSRM not in applied(decision)
    later = T0 + timedelta(minutes=11)
    body, _ = step(body, Observed(children=children, gsrm_build=waiting), later)
    assert body["status"]["phase"] == "Failed"
    assert conditions(body)["Failed"]["reason"] == "GSRMMissing"


ANNOTATE_REPORT = AnnotateSummary(
    finished=True, paths=163, accepted=100, rejected=3, failures={"timeout": 60}
)


def test_a_failed_annotation_fails_the_job_quoting_annotate_json() -> None:
    body, children = annotating()
    message = "Job has reached the specified backoff limit"
    children[ANNOTATE] = job_in(children[ANNOTATE], "Failed", "BackoffLimitExceeded", message)
    assert needs(body, children).build_reports
    reports = GSRMBuildSeen(annotate=ANNOTATE_REPORT)
    body, decision = step(body, Observed(children=children, gsrm_build=reports))
    failed = conditions(body)["Failed"]
    assert body["status"]["phase"] == "Failed" and failed["reason"] == "BackoffLimitExceeded"
    assert failed["message"] == (
        f"the annotate Job failed: {message}; annotate.json: 163 paths: accepted 100, "
        "rejected 3, failed 60, done before 0; failed: timeout 60"
    )
    assert conditions(body)["GSRMBuilt"]["reason"] == "BackoffLimitExceeded"
    assert set(replicas(decision).values()) == {0}  # the annotator gives its GPUs back
    assert GSRM not in applied(decision) and BUILDER not in applied(decision)
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "Failed")]
    assert not needs(body, children).gsrm_build  # finished: nothing more to read


def test_a_failed_gate_fails_the_job_quoting_evaluation_json() -> None:
    body, children = building()
    children[BUILDER] = pytorchjob_in(children[BUILDER], "Failed", "pod exited with 1")
    reports = GSRMBuildSeen(ProgressDocument(stage="finished"), True, ANNOTATE_REPORT, MISSED_GATE)
    body, decision = step(body, Observed(children=children, gsrm_build=reports))
    failed = conditions(body)["Failed"]
    assert failed["reason"] == "PyTorchJobFailed"
    assert failed["message"] == (
        "the GSRM build failed: pod exited with 1; evaluation.json: 64 held out: parse rate "
        "0.420, step-count agreement 0.250, step agreement -; misses its gate: parse rate 0.420 "
        "is below 0.9 (spec.gsrm.build.gate.minParseRate)"
    )
    assert GSRM not in applied(decision)


def test_a_build_that_failed_in_training_quotes_its_own_failure() -> None:
    body, children = building()
    children[BUILDER] = pytorchjob_in(children[BUILDER], "Failed", "backoff limit")
    doc = ProgressDocument(stage="training", failure="CUDA out of memory")
    body, _ = step(body, Observed(children=children, gsrm_build=GSRMBuildSeen(doc)))
    assert conditions(body)["Failed"]["message"].endswith("; CUDA out of memory")


def test_a_build_found_done_in_the_store_is_skipped() -> None:
    body, decision = step(build_job(), Observed(store=STORE_OK, gsrm_build=FINISHED))
    assert conditions(body)["GSRMBuilt"]["status"] == "True"
    assert ANNOTATE not in applied(decision) and BUILDER not in applied(decision)
    assert replicas(decision) == {"demo-gsrm": 1, "demo-judge": 0, "demo-annotator": 0}
    assert body["status"]["phase"] == "Provisioning"
    assert [e.reason for e in decision.events] == ["Provisioning"]


def test_a_build_not_read_starts_nothing() -> None:
    body, decision = step(build_job(), Observed(store=STORE_OK))  # the store did not answer
    assert body["status"]["phase"] == "Provisioning" and "reading" in body["status"]["message"]
    assert not [m for m in decision.apply if m["kind"] in ("Job", "PyTorchJob", "Deployment")]
    assert needs_poll(body) and needs(body, {}).gsrm_build


def test_a_gate_on_step_agreement_serves_the_judge_for_the_build() -> None:
    body, children = annotating(gate={"minStepAgreement": 0.5})
    children[ANNOTATE] = job_in(children[ANNOTATE], "Complete", "CompletionsReached")
    body, decision = step(body, Observed(children=children, gsrm_build=NOTHING))
    assert replicas(decision) == {"demo-annotator": 0, "demo-judge": 1}
    assert BUILDER not in applied(decision) and body["status"]["phase"] == "Provisioning"
    children = seen(children, decision)
    body, decision = step(body, Observed(children=children, gsrm_build=NOTHING))
    assert list(applied(decision)) == [BUILDER]
    container = applied(decision)[BUILDER]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    env = {e["name"] for e in container["spec"]["containers"][0]["env"]}
    assert "RLKD_JUDGE_URL" in env and "RLKD_ANNOTATOR_URL" not in env


def test_suspend_stops_the_annotate_job_and_the_build() -> None:
    body, children = annotating()
    suspended = {**body, "spec": {**body["spec"], "suspend": True}}
    suspended, decision = step(suspended, Observed(children=children, gsrm_build=NOTHING))
    assert [(p["metadata"]["name"], p["spec"]) for p in decision.patch] == [
        ("demo-annotate", {"suspend": True})
    ]
    assert GSRM not in applied(decision)

    body, children = building()
    children[BUILDER] = pytorchjob_in(children[BUILDER], "Running")
    suspended = {**body, "spec": {**body["spec"], "suspend": True}}
    suspended, decision = step(suspended, Observed(children=children, gsrm_build=NOTHING))
    assert applied(decision)[BUILDER]["spec"]["runPolicy"]["suspend"] is True
    children[BUILDER] = edited(children[BUILDER], "spec", "runPolicy", "suspend", value=True)
    resumed, decision = step(body, Observed(children=children, gsrm_build=NOTHING))
    assert applied(decision)[BUILDER]["spec"]["runPolicy"]["suspend"] is False
    assert resumed["status"]["phase"] == "BuildingGSRM"


def test_an_invalid_spec_stops_the_build() -> None:
    body, children = building()
    children[BUILDER] = pytorchjob_in(children[BUILDER], "Running")
    broken = {**body, "spec": {**body["spec"], "student": {}}}
    _, decision = step(broken, Observed(children=children))
    patched = {p["metadata"]["name"]: p["spec"] for p in decision.patch}
    assert patched["demo-build"] == {"runPolicy": {"suspend": True}}
