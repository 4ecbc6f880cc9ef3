"""A job that builds its GSRM (spec.gsrm.build), with the real kopf operator on the emulator and a
real S3 server: the tests play the Job and PyTorchJob controllers and write what `rlkd annotate`,
`rlkd train-gsrm` and `rlkd eval-gsrm` would write into the store."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.spec.progress import (
    ANNOTATE_KEY,
    GSRM_BUILD_PREFIX,
    GSRM_EVALUATION_KEY,
    PREPARE_KEY,
    PROGRESS_KEY,
    AnnotateSummary,
    PrepareSummary,
)
from rlkd.store.base import SubStore
from rlkd_operator.resources import DEPLOYMENTS, JOBS, PYTORCHJOBS, RLKDJOBS
from tests.integration.test_operator_scenarios import (  # noqa: F401  (the `world` fixture)
    NS,
    Cluster,
    condition,
    servers_available,
    world,
)
from tests.kube_emulator import running_operator, wait_for
from tests.operator_fixtures import MISSED_GATE, pytorchjob_in

pytestmark = pytest.mark.s3
BUILD = {"baseModel": "store://models/base", "annotator": {"model": "store://models/annotator"}}
SPEC = {
    "teacher": {"source": "dataset"},
    "gsrm": {"model": "store://models/gsrm-built", "build": BUILD},
}


def build_store(cluster: Cluster) -> SubStore:
    """The demo job's gsrm-build/ prefix: what the build commands write."""
    return SubStore(cluster.store(), GSRM_BUILD_PREFIX)


def replicas(cluster: Cluster, role: str) -> int | None:
    deployment = cluster.get(DEPLOYMENTS, f"demo-{role}")
    return None if deployment is None else deployment["spec"]["replicas"]


def failed_condition(cluster: Cluster) -> dict[str, Any]:
    failed = condition(cluster, "Failed")
    assert failed is not None
    return failed


async def job_ends(cluster: Cluster, name: str, kind: str, reason: str, message: str = "") -> None:
    """Play the Job controller: the batch Job `name` ends with `kind` (Complete or Failed)."""
    job = cluster.get(JOBS, name)
    status = {
        "conditions": [{"type": kind, "status": "True", "reason": reason, "message": message}]
    }
    await cluster.set_status(JOBS, name, {**job, "status": status})


async def build_in(cluster: Cluster, state: str, message: str = "") -> None:
    build = cluster.get(PYTORCHJOBS, "demo-build")
    await cluster.set_status(PYTORCHJOBS, "demo-build", pytorchjob_in(build, state, message))


def gsrm_built(cluster: Cluster) -> None:
    """What a build that passed its gate leaves: the model at gsrm.model, progress finished."""
    cluster.store("rlkd/models/gsrm-built").put_json("config.json", {"model_type": "qwen2"})
    build_store(cluster).put_json(PROGRESS_KEY, {"stage": "finished", "step": 5, "totalSteps": 5})


async def until_building(cluster: Cluster) -> None:
    """Apply the build job, bring the annotator up and let annotation succeed."""
    await cluster.apply_job(**SPEC)
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-annotator"))
    await servers_available(cluster, "annotator")
    await wait_for(lambda: cluster.phase() == "Annotating")
    done = AnnotateSummary(finished=True, paths=64, accepted=64)
    build_store(cluster).put_json(ANNOTATE_KEY, done.to_dict())
    await job_ends(cluster, "demo-annotate", "Complete", "CompletionsReached")
    await wait_for(lambda: cluster.phase() == "BuildingGSRM")


async def test_a_job_builds_its_gsrm_then_trains_on_it(world) -> None:  # noqa: F811
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(**SPEC)
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-annotator"))
        assert cluster.phase() == "Provisioning" and cluster.get(JOBS, "demo-annotate") is None
        assert replicas(cluster, "judge") == 0 and replicas(cluster, "gsrm") is None
        await servers_available(cluster, "annotator")
        await wait_for(lambda: cluster.phase() == "Annotating")
        annotate = cluster.get(JOBS, "demo-annotate")["spec"]["template"]["spec"]["containers"][0]
        assert annotate["command"] == ["rlkd", "annotate"]

        await job_ends(cluster, "demo-annotate", "Complete", "CompletionsReached")
        await wait_for(lambda: cluster.phase() == "BuildingGSRM")
        assert replicas(cluster, "annotator") == 0  # freed as soon as annotation is done
        assert replicas(cluster, "gsrm") is None  # the model is not there yet
        await build_in(cluster, "Running")
        build_store(cluster).put_json(
            PROGRESS_KEY, {"stage": "training", "step": 2, "totalSteps": 5}
        )
        await wait_for(lambda: "step 2/5" in cluster.get(RLKDJOBS, "demo")["status"]["message"])

        gsrm_built(cluster)
        await build_in(cluster, "Succeeded")
        await wait_for(lambda: replicas(cluster, "gsrm") == 1)
        gsrm = cluster.get(DEPLOYMENTS, "demo-gsrm")["spec"]["template"]["spec"]["containers"][0]
        assert gsrm["args"][0] == f"s3://{cluster.bucket}/rlkd/models/gsrm-built"
        await servers_available(cluster, "gsrm")
        await wait_for(lambda: cluster.phase() == "Preparing")
        cluster.store().put_json(PREPARE_KEY, PrepareSummary(finished=True, examples=64).to_dict())
        await job_ends(cluster, "demo-prepare", "Complete", "CompletionsReached")
        await wait_for(lambda: replicas(cluster, "judge") == 1)
        await servers_available(cluster, "judge")
        await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
        await cluster.learner("Running")
        await wait_for(lambda: cluster.phase() == "Training")
        assert replicas(cluster, "annotator") == 0
        await wait_for(
            lambda: (
                cluster.event_reasons()
                == [
                    "Provisioning",
                    "Annotating",
                    "BuildingGSRM",
                    "Provisioning",
                    "Preparing",
                    "Provisioning",
                    "Training",
                ]
            )
        )
    creates = cluster.creates()
    assert sorted(creates) == sorted(set(creates))
    assert ("jobs", "demo-annotate") in creates and ("pytorchjobs", "demo-build") in creates


async def test_a_failed_annotation_fails_the_job_with_the_counts(world) -> None:  # noqa: F811
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(**SPEC)
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-annotator"))
        await servers_available(cluster, "annotator")
        await wait_for(lambda: cluster.phase() == "Annotating")
        report = AnnotateSummary(
            finished=True, paths=64, accepted=10, rejected=2, failures={"timeout": 52}
        )
        build_store(cluster).put_json(ANNOTATE_KEY, report.to_dict())
        message = "Job has reached the specified backoff limit"
        await job_ends(cluster, "demo-annotate", "Failed", "BackoffLimitExceeded", message)
        await wait_for(lambda: cluster.phase() == "Failed")
        failed = failed_condition(cluster)
        assert failed["reason"] == "BackoffLimitExceeded" and message in failed["message"]
        quoted = "annotate.json: 64 paths: accepted 10, rejected 2, failed 52, done before 0"
        assert failed["message"].endswith(quoted + "; failed: timeout 52")
        await wait_for(lambda: replicas(cluster, "annotator") == 0)
        assert cluster.get(PYTORCHJOBS, "demo-build") is None and replicas(cluster, "gsrm") is None
        await wait_for(lambda: cluster.event_reasons()[-1:] == ["Failed"])


async def test_a_failed_gate_fails_the_job_quoting_the_evaluation(world) -> None:  # noqa: F811
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await until_building(cluster)
        await build_in(cluster, "Running")
        build_store(cluster).put_json(GSRM_EVALUATION_KEY, MISSED_GATE.to_dict())
        await build_in(cluster, "Failed", "PyTorchJob demo-build is failed")
        await wait_for(lambda: cluster.phase() == "Failed")
        message = failed_condition(cluster)["message"]
        assert message.startswith("the GSRM build failed: PyTorchJob demo-build is failed")
        assert message.endswith(
            "evaluation.json: 64 held out: parse rate 0.420, step-count agreement 0.250, step "
            "agreement -; misses its gate: parse rate 0.420 is below 0.9 "
            "(spec.gsrm.build.gate.minParseRate)"
        )
        assert replicas(cluster, "gsrm") is None and cluster.get(PYTORCHJOBS, "demo") is None


async def test_a_restarted_operator_resumes_the_build_and_a_recreated_job_skips_it(world) -> None:  # noqa: F811
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await until_building(cluster)
    # Killed while building; meanwhile the build passes its gate.
    gsrm_built(cluster)
    await build_in(cluster, "Succeeded")
    async with running_operator(kubeconfig, (NS,)):
        await wait_for(lambda: replicas(cluster, "gsrm") == 1)
        await servers_available(cluster, "gsrm")
        await wait_for(lambda: cluster.phase() == "Preparing")
    creates = cluster.creates()
    assert sorted(creates) == sorted(set(creates))  # no second annotation, no second build

    # The same job, deleted and applied again (its children gone with it): the build is found
    # done in the store, so it never runs again and the annotator never starts.
    await cluster.call("DELETE", RLKDJOBS.path(NS, "demo"))
    for api, name in ((JOBS, "demo-annotate"), (PYTORCHJOBS, "demo-build"), (JOBS, "demo-prepare")):
        await cluster.call("DELETE", api.path(NS, name))
    for role in ("annotator", "gsrm", "judge"):
        await cluster.call("DELETE", DEPLOYMENTS.path(NS, f"demo-{role}"))
    before = len(creates)
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(**SPEC)
        await wait_for(lambda: replicas(cluster, "gsrm") == 1)
        built = await wait_for(lambda: condition(cluster, "GSRMBuilt"))
        assert built["status"] == "True" and built["reason"] == "Built"
        assert replicas(cluster, "annotator") == 0
    again = [name for _, name in cluster.creates()[before:]]
    assert "demo-annotate" not in again and "demo-build" not in again
