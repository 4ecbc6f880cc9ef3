"""The stall watchdog with the real kopf operator against the emulator and a real S3 server: the
test plays the Training Operator (the PyTorchJob's state and its pods) and the learner (its
progress document). Budgets are a few seconds of the operator's real clock."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from rlkd.spec.progress import PROGRESS_KEY
from rlkd_operator.kube import TRAINING_JOB_LABEL
from rlkd_operator.resources import PODS, PYTORCHJOBS, RLKDJOBS
from tests.integration.test_kueue_scenarios import NO_QUOTA, QUEUED, create_workload
from tests.integration.test_operator_scenarios import (  # noqa: F401  (the `world` fixture)
    NS,
    Cluster,
    condition,
    passes,
    until_learner,
    world,
)
from tests.kube_emulator import running_operator, wait_for

WATCHDOG = {"gpusPerReplica": 0, "stallTimeoutSeconds": 2, "startupTimeoutSeconds": 2}


async def learner_pods(cluster: Cluster, job: str = "demo") -> None:
    """What the Training Operator runs for the PyTorchJob: a Master and a Worker pod."""
    for replica in ("master-0", "worker-0"):
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{job}-{replica}",
                "namespace": NS,
                "labels": {TRAINING_JOB_LABEL: job},
            },
            "spec": {"containers": [{"name": "pytorch", "image": "trainer"}]},
        }
        await cluster.call("POST", PODS.path(NS), pod)


def pods(cluster: Cluster) -> set[str]:
    return {
        key[2]
        for key in cluster.emulator.objects
        if key[0].plural == PODS.plural and cluster.get(PODS, key[2]) is not None
    }


def watchdog(cluster: Cluster) -> dict[str, Any]:
    return (cluster.get(RLKDJOBS, "demo") or {}).get("status", {}).get("watchdog") or {}


async def test_a_stalled_learner_is_restarted_until_the_limit_then_fails(
    world,  # noqa: F811
) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await until_learner(cluster, learner={**WATCHDOG, "maxStallRestarts": 2})
        store = cluster.store()
        store.put_json(PROGRESS_KEY, {"stage": "training", "step": 3, "totalSteps": 20})
        await learner_pods(cluster)
        await learner_pods(cluster, "other")  # another job's pods: never touched
        await cluster.learner("Running")
        await wait_for(lambda: watchdog(cluster).get("mark") == "training step 3")
        store.put_json(PROGRESS_KEY, {"stage": "training", "step": 4, "totalSteps": 20})
        await wait_for(lambda: watchdog(cluster).get("moved"))

        # Step 4 never ends: Stalled, a Warning, the learner's pods deleted, the count at 1.
        await wait_for(lambda: watchdog(cluster).get("restarts") == 1, timeout=15)
        stalled = condition(cluster, "Stalled")
        assert stalled and stalled["status"] == "True" and stalled["reason"] == "Restarted"
        assert "at training step 4" in stalled["message"]
        await wait_for(lambda: pods(cluster) == {"other-master-0", "other-worker-0"})
        assert cluster.event_reasons().count("Stalled") == 1
        assert cluster.phase() == "Training"

        # The Training Operator recreates them; they hang again before their first step.
        await learner_pods(cluster)
        await wait_for(lambda: watchdog(cluster).get("restarts") == 2, timeout=15)
        await wait_for(lambda: "demo-master-0" not in pods(cluster))

        # Past maxStallRestarts: Failed with reason Stalled, the learner suspended.
        await learner_pods(cluster)
        await wait_for(lambda: cluster.phase() == "Failed", timeout=15)
        failed = condition(cluster, "Failed")
        assert failed and failed["reason"] == "Stalled"
        assert "2 stall restarts done, spec.learner.maxStallRestarts is 2" in failed["message"]
        assert cluster.get(PYTORCHJOBS, "demo")["spec"]["runPolicy"]["suspend"] is True
        assert "demo-master-0" in pods(cluster)  # no restart past the limit
        await wait_for(lambda: cluster.event_reasons().count("Stalled") == 3)
        metrics = generate_latest(runtime.metrics.registry).decode()
        assert 'rlkd_learner_stalls_total{job="demo",namespace="ns1"} 3.0' in metrics


async def test_moving_again_clears_the_stall(
    world,  # noqa: F811
) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await until_learner(cluster, learner={**WATCHDOG, "startupTimeoutSeconds": 600})
        store = cluster.store()
        store.put_json(PROGRESS_KEY, {"stage": "training", "step": 3})
        await cluster.learner("Running")
        await wait_for(lambda: watchdog(cluster).get("mark"))
        store.put_json(PROGRESS_KEY, {"stage": "training", "step": 4})
        await wait_for(lambda: watchdog(cluster).get("restarts") == 1, timeout=15)
        store.put_json(PROGRESS_KEY, {"stage": "training", "step": 5})  # resumed and moved
        await wait_for(lambda: (c := condition(cluster, "Stalled")) and c["status"] == "False")
        assert condition(cluster, "Stalled")["reason"] == "Progressing"
        assert cluster.phase() == "Training"


async def test_no_stall_before_the_first_step_or_while_suspended(
    world,  # noqa: F811
) -> None:
    """Waiting is not hanging: a learner that is not Running runs no clock, and one that runs
    but has not made its first step is on the startup budget."""
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await until_learner(cluster, learner={**WATCHDOG, "startupTimeoutSeconds": 600})
        await cluster.learner("Running")  # loading the model: no progress document yet
        await wait_for(lambda: watchdog(cluster).get("mark") == "starting")
        await cluster.patch_spec("demo", suspend=True)
        await cluster.learner("Suspended")
        await wait_for(lambda: cluster.phase() == "Suspended")
        await wait_for(lambda: "mark" not in watchdog(cluster))
        await passes(runtime, 20)  # several stall budgets of the operator's clock
        assert condition(cluster, "Stalled") is None
        assert watchdog(cluster) == {"moved": False, "restarts": 0}


async def test_no_stall_while_queued_in_kueue(
    world,  # noqa: F811
) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await cluster.apply_job(learner={**WATCHDOG, **QUEUED})
        await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
        await create_workload(cluster, NO_QUOTA)
        await cluster.learner("Suspended", message="PyTorchJob demo is suspended.")
        await wait_for(lambda: (c := condition(cluster, "Queued")) and c["status"] == "True")
        await passes(runtime, 20)
        assert condition(cluster, "Stalled") is None and cluster.phase() == "Provisioning"
