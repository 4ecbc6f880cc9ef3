"""The operator's GPU placement and Kueue queue: what a job leaves unset, it inherits; what it
sets, it keeps; and only GPU pods are sent to GPU nodes."""

from __future__ import annotations

import dataclasses

import pytest

from rlkd.errors import SpecError
from rlkd.k8s import OperatorDefaults, build_children
from rlkd.k8s.defaults import GPUScheduling
from rlkd.spec.job import Toleration
from tests.jobs import DEFAULTS, make_job

GPU = GPUScheduling(
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
)
WITH_GPU = dataclasses.replace(DEFAULTS, gpu=GPU, queue_name="gpus")
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
CPU_LEARNER = {
    "learner": {"gpusPerReplica": 0},
    "rollout": {"mode": "transformers"},
    "grpo": {"precision": "fp32"},
}


def pod_specs(spec: dict | None = None, defaults: OperatorDefaults = WITH_GPU, **meta) -> dict:
    """Each child's pod spec, by child name."""
    out = {}
    for child in build_children(make_job(spec, **meta), defaults).all():
        if child["kind"] == "Deployment":
            out[child["metadata"]["name"]] = child["spec"]["template"]["spec"]
        elif child["kind"] == "PyTorchJob":
            replicas = child["spec"]["pytorchReplicaSpecs"]
            out[child["metadata"]["name"]] = replicas["Master"]["template"]["spec"]
        elif child["kind"] == "Job":
            out[child["metadata"]["name"]] = child["spec"]["template"]["spec"]
    return out


def test_gpu_pods_inherit_the_operators_gpu_nodes() -> None:
    pods = pod_specs()
    for name in ("demo", "demo-gsrm", "demo-judge", "demo-rollout"):
        assert pods[name]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, name
        assert pods[name]["tolerations"] == [TOLERATION], name


def test_a_cpu_learner_and_the_cpu_prepare_job_stay_off_gpu_nodes() -> None:
    pods = pod_specs(CPU_LEARNER)
    assert "nodeSelector" not in pods["demo"] and "tolerations" not in pods["demo"]
    assert "nodeSelector" not in pods["demo-prepare"]
    assert pods["demo-judge"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_a_job_that_places_a_pod_itself_keeps_its_own_placement() -> None:
    own = {"nodeSelector": {"pool": "h100"}}
    pods = pod_specs({"judge": {"vllm": own}, "learner": {"tolerations": [TOLERATION]}})
    assert pods["demo-judge"]["nodeSelector"] == {"pool": "h100"}
    assert "tolerations" not in pods["demo-judge"]  # it chose its nodes: nothing added
    assert "nodeSelector" not in pods["demo"] and pods["demo"]["tolerations"] == [TOLERATION]
    assert pods["demo-gsrm"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}


def test_without_gpu_defaults_nothing_is_added() -> None:
    pods = pod_specs(defaults=DEFAULTS)
    assert not any("nodeSelector" in p or "tolerations" in p for p in pods.values())


@pytest.mark.parametrize(
    ("spec", "meta", "queue"),
    [
        ({}, {}, "gpus"),
        ({"learner": {"queueName": "mine"}}, {}, "mine"),
        ({}, {"labels": {"kueue.x-k8s.io/queue-name": "labelled"}}, "labelled"),
    ],
)
def test_learners_inherit_the_default_queue(spec: dict, meta: dict, queue: str) -> None:
    learner = next(
        c
        for c in build_children(make_job(spec, **meta), WITH_GPU).all()
        if c["kind"] == "PyTorchJob"
    )
    assert learner["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == queue


def test_gpu_and_queue_defaults_come_from_the_environment() -> None:
    got = OperatorDefaults.from_env(
        {
            "RLKD_GPU_NODE_SELECTOR": '{"nvidia.com/gpu.present": "true"}',
            "RLKD_GPU_TOLERATIONS": '[{"key": "nvidia.com/gpu", "operator": "Exists", '
            '"effect": "NoSchedule"}]',
            "RLKD_DEFAULT_QUEUE_NAME": "gpus",
        }
    )
    assert (got.gpu, got.queue_name) == (GPU, "gpus")


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        (
            {"RLKD_GPU_TOLERATIONS": '{"key": "x"}'},
            "RLKD_GPU_TOLERATIONS: must be a JSON list, e.g. "
            '[{"key": "nvidia.com/gpu", "operator": "Exists"}]',
        ),
        ({"RLKD_GPU_NODE_SELECTOR": "[]"}, "RLKD_GPU_NODE_SELECTOR: must be a JSON object, e.g."),
        ({"RLKD_GPU_TOLERATIONS": '[{"operator": "Equal"}]'}, "RLKD_GPU_TOLERATIONS: "),
        ({"RLKD_DEFAULT_QUEUE_NAME": "GPUs"}, "RLKD_DEFAULT_QUEUE_NAME: must be a DNS-1123"),
    ],
)
def test_a_bad_gpu_or_queue_setting_names_its_variable(env: dict, problem: str) -> None:
    with pytest.raises(SpecError) as caught:
        OperatorDefaults.from_env(env)
    assert caught.value.problems[0].startswith(problem), caught.value.problems


def test_a_served_annotator_goes_to_gpu_nodes_too() -> None:
    build = {
        "baseModel": "store://models/base",
        "annotator": {"model": "store://models/annotator"},
    }
    gsrm = {"model": "store://models/gsrm-built", "build": build}
    pods = pod_specs({"gsrm": gsrm})
    assert pods["demo-annotator"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pods["demo-annotator"]["tolerations"] == [TOLERATION]
