"""The real operator on the emulator with Kueue played by the test: a queued job waits suspended
with its servers at zero, is reported Queued with Kueue's reason, runs once admitted without the
operator touching what Kueue set, and is suspended through its Workload. And an upgraded
operator leaves a running job's children as they were built."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.k8s import OperatorDefaults, inference
from rlkd.k8s.kueue import QUEUE_LABEL
from rlkd_operator.kube import KUEUE_JOB_UID_LABEL
from rlkd_operator.resources import CHILDREN, DEPLOYMENTS, PYTORCHJOBS, WORKLOADS
from tests.integration.test_operator_scenarios import (  # noqa: F401  (the `world` fixture)
    INFERENCE,
    NS,
    Cluster,
    condition,
    operator_writes,
    passes,
    until_training,
    world,
)
from tests.kube_emulator import running_operator, wait_for

pytestmark = pytest.mark.s3
QUEUED = {"gpusPerReplica": 0, "queueName": "gpu"}
WORKLOAD = "pytorchjob-demo-5b3c1"
NO_QUOTA = {
    "type": "QuotaReserved",
    "status": "False",
    "reason": "Pending",
    "message": "couldn't assign flavors to pod set master: insufficient quota for nvidia.com/gpu",
}
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
FLAVOR = {"cloud.example.com/pool": "h100"}


def replicas(cluster: Cluster) -> set[int]:
    return {cluster.get(DEPLOYMENTS, f"demo-{r}")["spec"]["replicas"] for r in INFERENCE}


async def create_workload(cluster: Cluster, *conditions: dict[str, Any]) -> None:
    """What Kueue creates for the queued PyTorchJob: a Workload it controls, by uid label."""
    learner = cluster.get(PYTORCHJOBS, "demo")
    uid = learner["metadata"]["uid"]
    owner = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "demo", "uid": uid}
    body = {
        "apiVersion": WORKLOADS.api_version,
        "kind": "Workload",
        "metadata": {
            "name": WORKLOAD,
            "namespace": NS,
            "labels": {KUEUE_JOB_UID_LABEL: uid},
            "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"queueName": "gpu", "active": True},
    }
    await cluster.call("POST", WORKLOADS.path(NS), body)
    await cluster.call(
        "PATCH", WORKLOADS.path(NS, WORKLOAD), {"status": {"conditions": list(conditions)}}
    )


async def kueue_admits(cluster: Cluster) -> None:
    """Kueue's admission: the flavor's node labels and tolerations into the pod template, then
    runPolicy.suspend false."""
    pod = {"nodeSelector": FLAVOR, "tolerations": [GPU_TAINT]}
    patch = {
        "spec": {
            "runPolicy": {"suspend": False},
            "pytorchReplicaSpecs": {"Master": {"template": {"spec": pod}}},
        }
    }
    await cluster.call("PATCH", PYTORCHJOBS.path(NS, "demo"), patch)
    admitted = {"type": "Admitted", "status": "True", "reason": "Admitted", "message": "ok"}
    await cluster.call(
        "PATCH", WORKLOADS.path(NS, WORKLOAD), {"status": {"conditions": [admitted]}}
    )


def kueue_fields_sent(cluster: Cluster) -> list[Any]:
    """What of Kueue's the operator's PATCHes of the PyTorchJob carried: runPolicy.suspend, and
    the admission-time fields of a pod template."""
    sent = []
    for r in cluster.emulator._requests:
        if not (
            r.method.name == "PATCH"
            and r.resource is not None
            and r.resource.plural == PYTORCHJOBS.plural
            and "kmock" not in r.headers.get("User-Agent", "")
        ):
            continue
        spec = r.data.get("spec", {})
        sent += [spec["runPolicy"]["suspend"]] if "suspend" in spec.get("runPolicy", {}) else []
        for replica in (spec.get("pytorchReplicaSpecs") or {}).values():
            pod = replica.get("template", {}).get("spec", {})
            sent += [pod[k] for k in ("nodeSelector", "tolerations") if k in pod]
    return sent


def master_pod(cluster: Cluster) -> dict[str, Any]:
    pod: dict[str, Any] = cluster.get(PYTORCHJOBS, "demo")["spec"]["pytorchReplicaSpecs"]
    return pod["Master"]["template"]["spec"]


async def queued_and_admitted(cluster: Cluster, runtime: Any) -> None:
    """A queued job from apply to Training, Kueue played by the test."""
    await cluster.apply_job(learner=QUEUED)
    learner = await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
    assert learner["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    assert learner["spec"]["runPolicy"]["suspend"] is True
    assert replicas(cluster) == {0}  # no GPUs held in the queue

    await create_workload(cluster, NO_QUOTA)
    await cluster.learner("Suspended", message="PyTorchJob demo is suspended.")
    queued = await wait_for(
        lambda: (c := condition(cluster, "Queued")) and c["message"] == NO_QUOTA["message"] and c
    )
    assert (queued["status"], queued["reason"]) == ("True", "Pending")
    assert cluster.phase() == "Provisioning"
    await passes(runtime, 3)
    assert cluster.get(PYTORCHJOBS, "demo")["spec"]["runPolicy"]["suspend"] is True
    assert replicas(cluster) == {0}
    assert operator_writes(cluster, "PATCH", PYTORCHJOBS.plural) == 0

    await kueue_admits(cluster)
    await wait_for(lambda: replicas(cluster) == {1})
    await wait_for(lambda: condition(cluster, "Queued")["status"] == "False")
    await cluster.inference_available()
    await cluster.learner("Running")
    await wait_for(lambda: cluster.phase() == "Training")


async def test_a_kueue_suspended_learner_is_left_suspended_reported_and_run_once_admitted(
    world,  # noqa: F811
) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await queued_and_admitted(cluster, runtime)
        await passes(runtime, 3)
        pod = master_pod(cluster)
        assert pod["tolerations"] == [GPU_TAINT] and pod["nodeSelector"] == FLAVOR
        assert operator_writes(cluster, "PATCH", PYTORCHJOBS.plural) == 0


async def test_suspend_of_a_queued_job_goes_through_its_workload(world) -> None:  # noqa: F811
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await queued_and_admitted(cluster, runtime)
        await cluster.patch_spec("demo", suspend=True)
        await wait_for(lambda: cluster.get(WORKLOADS, WORKLOAD)["spec"]["active"] is False)
        await wait_for(lambda: cluster.phase() == "Suspended" and replicas(cluster) == {0})
        assert cluster.get(PYTORCHJOBS, "demo")["spec"]["runPolicy"]["suspend"] is False
        assert condition(cluster, "Suspended")["reason"] == "Deactivating"
        # Kueue evicts the deactivated Workload: it suspends the job and restores its template.
        restore = {"nodeSelector": None, "tolerations": None}
        patch = {
            "spec": {
                "runPolicy": {"suspend": True},
                "pytorchReplicaSpecs": {"Master": {"template": {"spec": restore}}},
            }
        }
        await cluster.call("PATCH", PYTORCHJOBS.path(NS, "demo"), patch)
        await cluster.learner("Suspended")
        await wait_for(lambda: condition(cluster, "Suspended")["reason"] == "Suspended")

        await cluster.patch_spec("demo", suspend=False)
        await wait_for(lambda: cluster.get(WORKLOADS, WORKLOAD)["spec"]["active"] is True)
        await wait_for(lambda: condition(cluster, "Queued")["status"] == "True")
        assert cluster.phase() == "Provisioning" and replicas(cluster) == {0}
        # The spec changed twice: the learner's record of its build was patched, nothing else.
        assert kueue_fields_sent(cluster) == []


def child_writes(cluster: Cluster) -> int:
    return sum(operator_writes(cluster, "PATCH", api.plural) for api in CHILDREN.values())


async def test_an_upgraded_operator_leaves_a_running_jobs_children_alone(
    world,  # noqa: F811
    monkeypatch,
) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await until_training(cluster)
    written = child_writes(cluster)
    # The next version: other images, another readiness probe.
    monkeypatch.setattr(
        inference, "READINESS_PROBE", {**inference.READINESS_PROBE, "periodSeconds": 5}
    )
    upgraded = OperatorDefaults(vllm_image="vllm/vllm-openai:v9.9.9", trainer_image="trainer:v2")
    async with running_operator(kubeconfig, (NS,), upgraded) as runtime:
        await wait_for(lambda: runtime.metrics.reconciles._value.get() >= 3)
        await passes(runtime, 2)
        assert child_writes(cluster) == written
        image = cluster.get(DEPLOYMENTS, "demo-gsrm")["spec"]["template"]["spec"]["containers"]
        assert image[0]["image"] != upgraded.vllm_image
        # The job's own spec changes: its children are rebuilt by the builders of today.
        await cluster.patch_spec("demo", ttlSecondsAfterFinished=3600)
        await wait_for(
            lambda: (
                {
                    cluster.get(DEPLOYMENTS, f"demo-{r}")["spec"]["template"]["spec"]["containers"][
                        0
                    ]["image"]
                    for r in INFERENCE
                }
                == {upgraded.vllm_image}
            )
        )
