"""An operator upgrade whose builders make other manifests leaves a running job's children as they
were built, until the job's own spec changes (rlkd_operator.built)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rlkd.k8s import OperatorDefaults, inference
from rlkd_operator.built import GENERATION_ANNOTATION, HASH_ANNOTATION, build_hash
from rlkd_operator.decide import Observed
from tests.unit.test_operator_decide import INFERENCE, applied, progress, step, training

NEW = OperatorDefaults(vllm_image="vllm/vllm-openai:v9.9.9", trainer_image="rlkd-trainer:next")
PJ = ("PyTorchJob", "demo")


def test_children_record_the_generation_and_the_build() -> None:
    _, children = training()
    for child in children.values():
        said = child["metadata"]["annotations"]
        built = {k: v for k, v in child.items() if k != "status"}  # as the builders made it
        assert said[GENERATION_ANNOTATION] == "1"
        assert said[HASH_ANNOTATION] == build_hash(built)


def test_the_hash_leaves_out_the_state_fields() -> None:
    _, children = training()
    deployment = copy.deepcopy(children[INFERENCE[0]])
    deployment["spec"]["replicas"] = 0
    assert build_hash(deployment) == build_hash(children[INFERENCE[0]])
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    assert build_hash(deployment) != build_hash(children[INFERENCE[0]])


def test_new_operator_defaults_do_not_touch_a_running_jobs_children() -> None:
    body, children = training()
    _, decision = step(body, Observed(children=children), defaults=NEW)
    assert decision.apply == () and decision.patch == ()


def test_a_changed_builder_does_not_touch_a_running_jobs_children(monkeypatch) -> None:
    body, children = training()
    stricter = {**inference.READINESS_PROBE, "failureThreshold": 5}
    monkeypatch.setattr(inference, "READINESS_PROBE", stricter)
    _, decision = step(body, Observed(children=children))
    assert decision.apply == ()


def test_a_spec_change_rebuilds_with_the_new_builders() -> None:
    body, children = training()
    body["spec"] = {**body["spec"], "ttlSecondsAfterFinished": 3600}
    body["metadata"] = {**body["metadata"], "generation": 2}
    _, decision = step(body, Observed(children=children), defaults=NEW)
    rebuilt = applied(decision)
    images = {rebuilt[k]["spec"]["template"]["spec"]["containers"][0]["image"] for k in INFERENCE}
    assert images == {NEW.vllm_image}
    assert {m["metadata"]["annotations"][GENERATION_ANNOTATION] for m in decision.apply} == {"2"}


def test_a_kept_child_still_scales_to_zero_when_the_job_ends() -> None:
    body, children = training("Succeeded")
    doc = progress(stage="finished", model="s3://rlkd-test/m/", step=20)
    observed = Observed(children=children, progress=doc, model_present=True)
    body, decision = step(body, observed, defaults=NEW)
    assert body["status"]["phase"] == "Succeeded"
    scaled = applied(decision)
    assert set(scaled) == set(INFERENCE)
    assert all(m["spec"] == {"replicas": 0} for m in scaled.values())  # nothing else sent


@pytest.mark.parametrize("edit", ["image", "replicas"])
def test_a_hand_edit_is_still_put_back_when_the_builders_did_not_change(edit: str) -> None:
    body, children = training()
    child: dict[str, Any] = copy.deepcopy(children[INFERENCE[0]])
    if edit == "image":
        child["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    else:
        child["spec"]["replicas"] = 0
    children[INFERENCE[0]] = child
    _, decision = step(body, Observed(children=children))
    assert list(applied(decision)) == [INFERENCE[0]]


def test_children_made_before_builds_were_recorded_are_kept() -> None:
    """The children of an operator older than this rule carry no record: kept likewise."""
    body, children = training()
    for child in children.values():
        del child["metadata"]["annotations"]
    _, decision = step(body, Observed(children=children), defaults=NEW)
    assert decision.apply == ()
