"""A GSRM build's children (spec.gsrm.build): the annotator's server, the annotate Job and the
build's PyTorchJob; what they run, call and get, and `rlkd render` of a job with a build, equal to
its golden file and valid for Kubernetes and the Kubeflow CRD.

Regenerate the golden file after an intended change: RLKD_REGENERATE_GOLDEN=1, then review."""

from __future__ import annotations

import os
from typing import Any

import kubernetes_validate
import pytest

from rlkd.k8s import build_children, inference_roles
from rlkd.k8s.gsrm_build import MASTER_COMMAND, TRAIN_COMMAND, build_servers
from rlkd.k8s.inference import role_server
from rlkd.k8s.prepare import learner_servers
from rlkd.k8s.render import render_job
from rlkd.spec.validate import load_job, parse_job
from tests.crdcheck import crd_errors
from tests.jobs import DEFAULTS, make_job, merge
from tests.unit.test_k8s_render import GOLDEN, KUBERNETES_VERSION, PYTORCHJOB_CRD, ROOT

BUILD = {"baseModel": "Qwen/Qwen2.5-7B-Instruct", "annotator": {"model": "x/annotator"}}
OPENAI = {"backend": "openai", "url": "https://api.example.com/v1", "model": "gpt-x"}


def build_spec(**build: Any) -> dict[str, Any]:
    return {
        "teacher": {"source": "dataset"},
        "gsrm": {"model": "store://models/gsrm-built", "build": {**BUILD, **build}},
    }


def container(manifest: dict[str, Any], replica: str | None = None) -> dict[str, Any]:
    spec = manifest["spec"]
    if replica is not None:
        spec = spec["pytorchReplicaSpecs"][replica]
    first: dict[str, Any] = spec["template"]["spec"]["containers"][0]
    return first


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


@pytest.mark.parametrize(
    ("annotator", "served"),
    [
        ({"model": "x/annotator"}, True),
        (OPENAI, False),
        ({"model": "x/a", "backend": "transformers"}, False),
    ],
)
def test_the_annotator_is_served_only_with_backend_vllm(
    annotator: dict[str, Any], served: bool
) -> None:
    job = make_job(build_spec(annotator=annotator))
    assert ("annotator" in inference_roles(job.spec)) is served
    assert "annotator" not in learner_servers(job.spec)  # the learner never calls it
    children = build_children(job, DEFAULTS)
    assert ("annotator" in children.inference) is served
    annotate = container(children.annotate or {})
    assert ("RLKD_ANNOTATOR_URL" in env_of(annotate)) is served
    if served:
        assert role_server(job.spec, "annotator").model == "x/annotator"
        assert env_of(annotate)["RLKD_ANNOTATOR_URL"] == "http://demo-annotator.team-a.svc:8000/v1"


def test_a_job_without_a_build_has_no_build_children() -> None:
    children = build_children(make_job(), DEFAULTS)
    assert children.annotate is None and children.build is None


def test_the_annotate_job_runs_rlkd_annotate_on_cpu_with_the_key_from_its_secret() -> None:
    job = make_job(build_spec(annotator=OPENAI, annotatorKeySecret="annotator-key"), uid="u-1")
    manifest = build_children(job, DEFAULTS).annotate
    assert manifest is not None
    assert (manifest["kind"], manifest["metadata"]["name"]) == ("Job", "demo-annotate")
    assert manifest["metadata"]["labels"]["app.kubernetes.io/component"] == "annotate"
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    c = container(manifest)
    assert c["command"] == ["rlkd", "annotate"] and "args" not in c
    assert "resources" not in c  # a hosted API: no GPU
    env = env_of(c)
    assert env["RLKD_ANNOTATOR_API_KEY"] == {
        "secretKeyRef": {"name": "annotator-key", "key": "RLKD_ANNOTATOR_API_KEY"}
    }
    assert env["RLKD_JOB_FILE"] == "/etc/rlkd/job.yaml"
    assert env["RLKD_STORE_PREFIX"] == "rlkd/team-a/demo"


def test_an_in_process_annotator_runs_on_the_learners_gpus() -> None:
    job = make_job(build_spec(annotator={"model": "x/a", "backend": "transformers"}))
    c = container(build_children(job, DEFAULTS).annotate or {})
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "4"  # the learner's default


def test_the_build_trains_on_every_pod_and_gates_on_the_master() -> None:
    job = make_job({**build_spec(), "learner": {"replicas": 2, "gpusPerReplica": 4}})
    manifest = build_children(job, DEFAULTS).build
    assert manifest is not None
    assert (manifest["kind"], manifest["metadata"]["name"]) == ("PyTorchJob", "demo-build")
    assert manifest["metadata"]["labels"]["app.kubernetes.io/component"] == "build"
    assert manifest["spec"]["nprocPerNode"] == "4"
    master, worker = container(manifest, "Master"), container(manifest, "Worker")
    assert (
        master["command"]
        == MASTER_COMMAND
        == ["sh", "-c", "rlkd train-gsrm && exec rlkd eval-gsrm"]
    )
    assert worker["command"] == TRAIN_COMMAND
    assert manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    assert master["resources"]["limits"]["nvidia.com/gpu"] == "4"
    env = env_of(master)
    assert env["RLKD_DEEPSPEED_FILE"] == "/etc/rlkd/deepspeed.json"
    assert not {k for k in env if k.endswith("_URL")}  # the default gate calls no server
    learner = build_children(job, DEFAULTS).learner
    assert container(learner, "Master")["command"] == ["rlkd", "train"]


@pytest.mark.parametrize(
    ("gate", "judge", "servers"),
    [
        ({}, {"model": "x/judge"}, []),
        ({"minStepAgreement": 0.5}, {"model": "x/judge"}, ["judge"]),
        ({"minStepAgreement": 0.5}, {"backend": "openai", "url": "http://j/v1", "model": "j"}, []),
    ],
)
def test_the_build_calls_the_judge_only_when_the_gate_measures_step_agreement(
    gate: dict[str, Any], judge: dict[str, Any], servers: list[str]
) -> None:
    job = make_job({**build_spec(gate=gate), "judge": judge})
    assert build_servers(job.spec) == servers
    env = env_of(container(build_children(job, DEFAULTS).build or {}, "Master"))
    assert {k for k in env if k.endswith("_URL")} == {f"RLKD_{r.upper()}_URL" for r in servers}


PAPER = ROOT / "manifests" / "examples" / "paper-qwen2.5-math-7b.yaml"
BUILT = GOLDEN / "gsrm-build" / "paper-qwen2.5-math-7b-gsrm-build.yaml"


def paper_with_a_build() -> Any:
    """The paper's example, its GSRM built first from the teacher's paths (the paper's GSRM:
    Qwen2.5-7B-Instruct fine-tuned on a larger model's decompositions)."""
    build = {
        "baseModel": "Qwen/Qwen2.5-7B-Instruct",
        "annotator": {"model": "Qwen/Qwen2.5-72B-Instruct", "vllm": {"tensorParallelSize": 4}},
        "limit": 2000,
    }
    doc = load_job(PAPER).to_dict()
    return parse_job(
        merge(doc, {"spec": {"gsrm": {"model": "store://models/gsrm", "build": build}}})
    )


def test_render_of_a_job_with_a_build_is_its_golden_file() -> None:
    rendered = render_job(paper_with_a_build(), DEFAULTS)
    if os.environ.get("RLKD_REGENERATE_GOLDEN"):
        BUILT.parent.mkdir(exist_ok=True)
        BUILT.write_text(rendered)
    assert BUILT.read_text() == rendered, f"regenerate with RLKD_REGENERATE_GOLDEN=1: {BUILT}"


def test_the_build_children_are_valid_kubernetes_and_kubeflow() -> None:
    children = build_children(paper_with_a_build(), DEFAULTS)
    assert children.annotate is not None and children.build is not None
    kubernetes_validate.validate(children.annotate, KUBERNETES_VERSION, strict=True)
    annotator = children.inference["annotator"]
    for manifest in (annotator.deployment, annotator.service):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert crd_errors(children.build, PYTORCHJOB_CRD) == []
    for replica in children.build["spec"]["pytorchReplicaSpecs"].values():
        template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "b"}}
        kubernetes_validate.validate(
            {**template, "template": replica["template"]}, KUBERNETES_VERSION, strict=True
        )
