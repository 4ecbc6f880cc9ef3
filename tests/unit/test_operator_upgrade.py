"""An operator upgrade whose builders make other manifests leaves a running job's children as they
were built, until the job's own spec changes; a spec change removes what it dropped
(rlkd_operator.built)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from rlkd.k8s import OperatorDefaults, inference
from rlkd_operator.built import BUILD_ANNOTATION, GENERATION_ANNOTATION, build_record
from rlkd_operator.decide import Observed
from rlkd_operator.kube import without_nulls
from tests.unit.test_operator_decide import INFERENCE, applied, progress, step, training

NEW = OperatorDefaults(vllm_image="vllm/vllm-openai:v9.9.9", trainer_image="rlkd-trainer:next")
PJ = ("PyTorchJob", "demo")


def test_children_record_the_generation_and_the_build() -> None:
    _, children = training()
    for child in children.values():
        said = child["metadata"]["annotations"]
        built = {k: v for k, v in child.items() if k != "status"}  # as the builders made it
        assert said[GENERATION_ANNOTATION] == "1"
        assert said[BUILD_ANNOTATION] == build_record(built)


def test_the_record_leaves_out_the_state_fields() -> None:
    _, children = training()
    deployment = copy.deepcopy(children[INFERENCE[0]])
    deployment["spec"]["replicas"] = 0
    assert build_record(deployment) == build_record(children[INFERENCE[0]])
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "other"
    assert build_record(deployment) != build_record(children[INFERENCE[0]])


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


def respec(body: dict[str, Any], **spec: Any) -> dict[str, Any]:
    """`body` after an edit of its spec: the API server's next generation."""
    generation = body["metadata"]["generation"] + 1
    return {**body, "metadata": {**body["metadata"], "generation": generation}, "spec": spec}


def test_a_spec_change_removes_what_it_dropped_and_keeps_what_others_added() -> None:
    pinned = {"vllm": {"resources": {"cpu": "1"}, "nodeSelector": {"pool": "a", "zone": "z1"}}}
    body, children = training(gsrm={"model": "store://models/gsrm", **pinned})
    gsrm = ("Deployment", "demo-gsrm")
    live = copy.deepcopy(children[gsrm])
    live["spec"]["template"]["spec"]["nodeSelector"]["kueue"] = "flavor"  # another writer's key
    live["spec"]["progressDeadlineSeconds"] = 600  # the API server's default
    children[gsrm] = live

    unpinned = {"vllm": {"resources": {"cpu": "1"}, "nodeSelector": {"pool": "b"}}}
    body = respec(body, **{**body["spec"], "gsrm": {"model": "store://models/gsrm", **unpinned}})
    _, decision = step(body, Observed(children=children))

    patch = applied(decision)[gsrm]
    assert patch["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "b", "zone": None}
    assert "progressDeadlineSeconds" not in patch["spec"]
    assert "zone" not in without_nulls(patch)["spec"]["template"]["spec"]["nodeSelector"]


def test_a_dropped_key_is_removed_once() -> None:
    pinned = {"vllm": {"resources": {"cpu": "1"}, "nodeSelector": {"pool": "a"}}}
    body, children = training(gsrm={"model": "store://models/gsrm", **pinned})
    gsrm = ("Deployment", "demo-gsrm")
    body = respec(body, **{**body["spec"], "gsrm": {"model": "store://models/gsrm"}})
    _, decision = step(body, Observed(children=children))
    assert applied(decision)[gsrm]["spec"]["template"]["spec"]["nodeSelector"] == {"pool": None}

    # The API server applied the patch: nothing is left to send.
    children.update(applied(decision))
    del children[gsrm]["spec"]["template"]["spec"]["nodeSelector"]
    _, decision = step(body, Observed(children=children))
    assert gsrm not in applied(decision)


def test_a_dropped_structure_is_removed_whole() -> None:
    body, children = training(gsrm={"model": "store://models/gsrm", "vllm": {"resources": {}}})
    gsrm = ("Deployment", "demo-gsrm")
    live = copy.deepcopy(children[gsrm])
    before = json.loads(live["metadata"]["annotations"][BUILD_ANNOTATION])
    before["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {"x": {}}}
    live["metadata"]["annotations"][BUILD_ANNOTATION] = json.dumps(before)  # an older build's
    live["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {"x": {}}}
    children[gsrm] = live

    _, decision = step(respec(body, **body["spec"]), Observed(children=children))

    assert applied(decision)[gsrm]["spec"]["template"]["spec"]["affinity"] is None
