"""The real kopf operator, in the test's event loop, against kmock's Kubernetes emulator and a real
S3 server. The tests play the cluster's controllers: they mark Deployments Available and move
the PyTorchJob through its states, and write what the learner would write into the store."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from prometheus_client import generate_latest

from rlkd.k8s import OperatorDefaults
from rlkd.k8s.naming import JOB_LABEL
from rlkd.spec.job import StorageSpec
from rlkd.spec.progress import MODEL_PREFIX, PREPARE_KEY, PROGRESS_KEY, PrepareSummary
from rlkd.store import S3Config
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR
from rlkd.store.s3 import S3Store
from rlkd_operator.handlers import health
from rlkd_operator.kube import USER_AGENT
from rlkd_operator.resources import (
    CHILDREN,
    CONFIGMAPS,
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    NETWORKPOLICIES,
    PYTORCHJOBS,
    RLKDJOBS,
    SECRETS,
    SERVICES,
)
from tests.kube_emulator import (
    Emulator,
    by_operator,
    kube_emulator,
    poll_passes,
    requests_outside,
    running_operator,
    wait_for,
    writes_sent,
)
from tests.operator_fixtures import available, job_body, pytorchjob_in
from tests.s3server import S3Server, hung_endpoint

pytestmark = pytest.mark.s3
NS = "ns1"
INFERENCE = ("gsrm", "judge")
CHILD_PLURALS = {api.plural for api in CHILDREN.values()}


class Cluster:
    """The emulator as a test sees it: apply, read, and play the controllers."""

    def __init__(self, emulator: Emulator, s3: S3Server, bucket: str) -> None:
        self.emulator, self.s3, self.bucket = emulator, s3, bucket

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        client = self.emulator.servers[0].client
        headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
        async with client.request(method, path, json=body, headers=headers) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def apply_job(self, name: str = "demo", endpoint: str | None = None, **spec: Any) -> None:
        """Apply a job on the test's store (or another `endpoint`); `storage=None`: on the
        operator's default store."""
        body = job_body(name, NS, **spec)
        body["metadata"] = {"name": name, "namespace": NS}
        if body["spec"]["storage"] is None:
            del body["spec"]["storage"]
        else:
            body["spec"]["storage"] = {
                **body["spec"]["storage"],
                "endpoint": endpoint or self.s3.endpoint,
                "bucket": self.bucket,
            }
        await self.call("POST", RLKDJOBS.path(NS), body)

    async def patch_spec(self, name: str, **spec: Any) -> None:
        await self.call("PATCH", RLKDJOBS.path(NS, name), {"spec": spec})

    def get(self, api: Any, name: str) -> dict[str, Any] | None:
        return self.emulator.stored(api, NS, name)

    def phase(self, name: str = "demo") -> str | None:
        return ((self.get(RLKDJOBS, name) or {}).get("status") or {}).get("phase")

    async def set_status(self, api: Any, name: str, body: dict[str, Any]) -> None:
        await self.call("PATCH", api.path(NS, name) + "/status", {"status": body["status"]})

    async def inference_available(self, job: str = "demo") -> None:
        for role in INFERENCE:
            name = f"{job}-{role}"
            await self.set_status(DEPLOYMENTS, name, available(self.get(DEPLOYMENTS, name)))

    async def learner(self, state: str, job: str = "demo", message: str = "") -> None:
        await self.set_status(
            PYTORCHJOBS, job, pytorchjob_in(self.get(PYTORCHJOBS, job), state, message)
        )

    def store(self, prefix: str = f"rlkd/{NS}/demo") -> S3Store:
        """The test's bucket at `prefix`: by default, the demo job's run (what the learner
        writes); "rlkd" is the store root that store:// URIs name."""
        config = S3Config(
            endpoint=self.s3.endpoint,
            bucket=self.bucket,
            prefix=prefix,
            credentials=self.s3.credentials,
        )
        return S3Store(config)

    def event_reasons(self) -> list[str]:
        events = [
            obj.raw for key, obj in self.emulator.objects.items() if key[0].plural == EVENTS.plural
        ]
        return [
            e["reason"] for e in sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))
        ]

    def creates(self) -> list[tuple[str, str]]:
        """(resource, name) of every create the operator sent, whether it succeeded or not."""
        return [
            (r.resource.plural, r.data["metadata"]["name"])
            for r in self.emulator._requests
            if r.method == "POST"
            and r.resource is not None
            and r.resource.plural != "events"
            and "kmock" not in r.headers.get("User-Agent", "")
        ]


@pytest.fixture
async def world(tmp_path: Path, s3_server: S3Server) -> AsyncIterator[tuple[Cluster, Path]]:
    """An emulator with the storage Secret, and a bucket that holds the dataset."""
    async with kube_emulator(tmp_path) as (emulator, kubeconfig):
        cluster = Cluster(emulator, s3_server, f"op-{uuid.uuid4().hex[:12]}")
        cluster.store("rlkd").put_bytes("datasets/train.jsonl", b"{}\n")
        keys = {
            ACCESS_KEY_VAR: s3_server.credentials.access_key,
            SECRET_KEY_VAR: s3_server.credentials.secret_key,
        }
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "store", "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()},
        }
        await cluster.call("POST", SECRETS.path(NS), secret)
        yield cluster, kubeconfig
        assert requests_outside(emulator) == []  # the ClusterRole covers every request made
        # Audit logs and managedFields name the operator: its own calls, or kopf's watches.
        agents = {r.headers.get("User-Agent", "") for r in emulator._requests if by_operator(r)}
        assert {a.split("/")[0] for a in agents} <= {"rlkd-operator", "kopf"}
        assert USER_AGENT in agents
        watched = [
            r for r in emulator._requests if r.resource and r.resource.plural in CHILD_PLURALS
        ]
        lists = [r for r in watched if r.action.name in ("LIST", "WATCH")]
        assert lists and {r.params.get("labelSelector") for r in lists} == {JOB_LABEL}


def children_of(cluster: Cluster, job: str = "demo") -> dict[str, Any]:
    names = {
        CONFIGMAPS: [f"{job}-config"],
        SERVICES: [f"{job}-{r}" for r in INFERENCE],
        DEPLOYMENTS: [f"{job}-{r}" for r in INFERENCE],
        PYTORCHJOBS: [job],
    }
    return {f"{api.kind}/{n}": cluster.get(api, n) for api, names_ in names.items() for n in names_}


async def until_learner(cluster: Cluster, **spec: Any) -> None:
    """Apply the demo job and make its servers available: the operator creates the learner."""
    await cluster.apply_job(**spec)
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
    await cluster.inference_available()
    await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))


async def until_training(cluster: Cluster) -> None:
    """`until_learner`, then the learner runs: the job is Training."""
    await until_learner(cluster)
    await cluster.learner("Running")
    await wait_for(lambda: cluster.phase() == "Training")


async def test_a_job_runs_from_apply_to_success_and_gives_its_gpus_back(world, caplog) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await cluster.apply_job()
        await wait_for(lambda: cluster.phase() == "Provisioning")
        assert cluster.get(PYTORCHJOBS, "demo") is None
        assert all(v is not None for k, v in children_of(cluster).items() if "PyTorchJob" not in k)

        await cluster.inference_available()
        await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
        store = cluster.store()
        store.put_json(
            PROGRESS_KEY,
            {
                "stage": "training",
                "step": 3,
                "totalSteps": 20,
                "meanReward": 12.5,
                "rewardErrors": {"judge_timeout": 2},
            },
        )
        await cluster.learner("Running")
        await wait_for(lambda: cluster.phase() == "Training")
        status = cluster.get(RLKDJOBS, "demo")["status"]
        assert (
            status["phase"] == "Training"
            and status["message"] == "training: step 3/20, mean reward 12.5"
        )
        assert status["progress"]["rewardErrors"] == {"judge_timeout": 2} and status["startTime"]
        # The gauges count the operator's own view of its jobs, which takes in the status patch
        # only once the operator has read the API server's answer (in a worker thread): the
        # emulator shows the phase first. Wait for that view, then check the gauges exactly.
        await wait_for(lambda: runtime.world.jobs[(NS, "demo")]["status"]["phase"] == "Training")
        metrics = generate_latest(runtime.metrics.registry).decode()
        assert 'rlkd_jobs{phase="Training"} 1.0' in metrics
        assert (
            'rlkd_job_reward_errors{job="demo",namespace="ns1",reason="judge_timeout"} 2.0'
            in metrics
        )

        store.put_bytes(MODEL_PREFIX + "config.json", b"{}")
        model = store.uri_for(MODEL_PREFIX.rstrip("/"))
        store.put_json(
            PROGRESS_KEY, {"stage": "finished", "step": 20, "totalSteps": 20, "model": model}
        )
        await cluster.learner("Succeeded")
        await wait_for(lambda: cluster.phase() == "Succeeded")
        status = cluster.get(RLKDJOBS, "demo")["status"]
        assert status["artifacts"]["model"] == model and status["completionTime"]
        await wait_for(
            lambda: all(
                cluster.get(DEPLOYMENTS, f"demo-{r}")["spec"]["replicas"] == 0 for r in INFERENCE
            )
        )
        await wait_for(lambda: cluster.event_reasons() == ["Provisioning", "Training", "Succeeded"])
    secret = cluster.s3.credentials.secret_key
    events = [o.raw for k, o in cluster.emulator.objects.items() if k[0].plural == EVENTS.plural]
    assert secret not in f"{cluster.get(RLKDJOBS, 'demo')} {events} {caplog.text}"


async def test_the_operator_locks_the_servers_with_a_network_policy(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(network={"monitoringNamespace": "monitoring"})
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        policy = cluster.get(NETWORKPOLICIES, "demo-inference")
        assert policy is not None
        assert (
            policy["metadata"]["ownerReferences"][0]["uid"]
            == cluster.get(RLKDJOBS, "demo")["metadata"]["uid"]
        )
        selector = policy["spec"]["podSelector"]["matchLabels"]
        for role in INFERENCE:
            pod_labels = cluster.get(DEPLOYMENTS, f"demo-{role}")["spec"]["template"]["metadata"]
            assert selector.items() <= pod_labels["labels"].items()
        own, monitoring = policy["spec"]["ingress"]
        assert own["from"] == [{"podSelector": {"matchLabels": {JOB_LABEL: "demo"}}}]
        assert monitoring["from"][0]["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "monitoring"
        }
        creates = [name for plural, name in cluster.creates() if plural != "secrets"]
        assert creates.index("demo-inference") < creates.index("demo-gsrm")  # locked first

        # Opened by hand (every source admitted): the operator puts the lock back.
        await cluster.call(
            "PATCH", NETWORKPOLICIES.path(NS, "demo-inference"), {"spec": {"ingress": [{}]}}
        )
        await wait_for(
            lambda: (
                cluster.get(NETWORKPOLICIES, "demo-inference")["spec"]["ingress"]
                == policy["spec"]["ingress"]
            )
        )


async def test_a_steady_job_with_gpu_children_makes_no_writes(world) -> None:
    """The API server stores quantities canonically (`nvidia.com/gpu: 1` as "1", `0.5` as
    "500m"), and so does the emulator: children compared naively with their live copies would
    be patched on every poll. Once the job is steady, poll passes (a resync among them) write
    nothing."""
    cluster, kubeconfig = world
    gsrm = {
        "model": "store://models/gsrm",
        "vllm": {"resources": {"cpu": "0.5", "memory": "1024Mi"}},
    }
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await cluster.apply_job(gsrm=gsrm, learner={"gpusPerReplica": 1})
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        await cluster.inference_available()
        await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
        await cluster.learner("Running")
        await wait_for(lambda: runtime.world.jobs[(NS, "demo")]["status"]["phase"] == "Training")
        pod = cluster.get(DEPLOYMENTS, "demo-gsrm")["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert limits == {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": "1"}  # as stored
        await poll_passes(runtime, 1)
        before = writes_sent(cluster.emulator)
        await poll_passes(runtime, runtime.options.resync_polls + 2)
        assert writes_sent(cluster.emulator)[len(before) :] == []


async def test_a_spec_edit_removes_what_it_dropped_from_the_children(world) -> None:
    """A merge patch leaves a key its body lacks: a nodeSelector entry removed from the spec
    leaves the Deployment because the operator sends null for it (rlkd_operator.built), while a
    key another writer added stays."""
    cluster, kubeconfig = world
    gsrm = {"model": "store://models/gsrm", "vllm": {"nodeSelector": {"pool": "a", "zone": "z1"}}}
    pods = DEPLOYMENTS.path(NS, "demo-gsrm")
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(gsrm=gsrm)
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-gsrm"))
        added = {"spec": {"template": {"spec": {"nodeSelector": {"other": "writer"}}}}}
        await cluster.call("PATCH", pods, added)

        # As `kubectl apply` sends the edit: null for the entry the file no longer has.
        await cluster.patch_spec(
            "demo", gsrm={"vllm": {"nodeSelector": {"pool": "b", "zone": None}}}
        )

        def selector() -> dict[str, str]:
            return cluster.get(DEPLOYMENTS, "demo-gsrm")["spec"]["template"]["spec"]["nodeSelector"]

        await wait_for(lambda: selector() == {"pool": "b", "other": "writer"})


async def test_a_resync_drops_what_a_relisted_watch_missed(world) -> None:
    """A watch that is relisted can miss DELETED events. The periodic resync (a LIST of jobs
    and children) drops them from the operator's world, and a missing child is created again."""
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await cluster.apply_job()
        await cluster.apply_job("other")
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "other-judge"))
        await wait_for(lambda: (NS, "other") in runtime.world.jobs)
        # Delete behind the operator's back: objects gone from the store, no watch event sent.
        for key in [k for k in cluster.emulator.objects if k[2] == "other" or k[2] == "demo-gsrm"]:
            if key[0].plural in (RLKDJOBS.plural, DEPLOYMENTS.plural):
                del cluster.emulator.objects[key]
        assert (NS, "other") in runtime.world.jobs
        await poll_passes(runtime, runtime.options.resync_polls + 1)
        assert (NS, "other") not in runtime.world.jobs
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-gsrm"))  # recreated
        assert ("Deployment", "demo-gsrm") in runtime.world.children((NS, "demo"))
        lists = [r for r in cluster.emulator._requests if r.action and r.action.name == "LIST"]
        assert {r.resource.plural for r in lists} >= {RLKDJOBS.plural, *CHILD_PLURALS}


async def test_a_resync_that_cannot_list_leaves_the_poller_running(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await cluster.apply_job()
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        errors = runtime.metrics.errors._value.get()
        refusal = (403, "Forbidden", "deployments is forbidden: cannot list")
        cluster.emulator.refuse[("GET", DEPLOYMENTS.plural)] = refusal
        await poll_passes(runtime, runtime.options.resync_polls + 1)
        assert runtime.metrics.errors._value.get() > errors
        assert not runtime.poller.done() and ("Deployment", "demo-judge") in runtime.world.children(
            (NS, "demo")
        )  # nothing dropped on a failed list
        del cluster.emulator.refuse[("GET", DEPLOYMENTS.plural)]


async def test_a_failed_learner_fails_the_job_with_its_reason(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await until_learner(cluster)
        await cluster.learner("Failed", message="pod demo-master-0 was OOMKilled")
        await wait_for(lambda: cluster.phase() == "Failed")
        failed = next(
            c
            for c in cluster.get(RLKDJOBS, "demo")["status"]["conditions"]
            if c["type"] == "Failed"
        )
        assert failed["reason"] == "PyTorchJobFailed" and "OOMKilled" in failed["message"]
        await wait_for(lambda: cluster.event_reasons()[-1:] == ["Failed"])


async def test_ttl_deletes_a_finished_job(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(ttlSecondsAfterFinished=0)
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        assert "finalizers" not in cluster.get(RLKDJOBS, "demo")["metadata"]  # none needed
        await cluster.inference_available()
        await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
        await cluster.learner("Failed")
        await wait_for(lambda: cluster.get(RLKDJOBS, "demo") is None)


async def test_suspend_and_resume(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await until_training(cluster)

        await cluster.patch_spec("demo", suspend=True)
        await wait_for(lambda: cluster.phase() == "Suspended")
        await wait_for(
            lambda: cluster.get(PYTORCHJOBS, "demo")["spec"]["runPolicy"]["suspend"] is True
        )
        assert {cluster.get(DEPLOYMENTS, f"demo-{r}")["spec"]["replicas"] for r in INFERENCE} == {0}

        await cluster.learner("Suspended")
        await cluster.inference_available()  # scaled to zero: Available=True, none available

        await cluster.patch_spec("demo", suspend=False)
        await wait_for(lambda: cluster.phase() == "Provisioning")
        # Scaled back up; their status (Available=True) is stale: the learner stays suspended.
        assert {cluster.get(DEPLOYMENTS, f"demo-{r}")["spec"]["replicas"] for r in INFERENCE} == {1}
        assert condition(cluster, "InferenceReady")["status"] == "False"
        assert cluster.get(PYTORCHJOBS, "demo")["spec"]["runPolicy"]["suspend"] is True
        await cluster.inference_available()
        await wait_for(
            lambda: cluster.get(PYTORCHJOBS, "demo")["spec"]["runPolicy"]["suspend"] is False
        )
        await cluster.learner("Running")
        await wait_for(lambda: cluster.phase() == "Training")


async def test_an_operator_killed_mid_flow_resumes_without_duplicates(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job()
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-gsrm"))
    # Killed, perhaps between two creates. Meanwhile the servers come up.
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge") or True)
    if cluster.get(DEPLOYMENTS, "demo-judge"):
        await cluster.inference_available()
    async with running_operator(kubeconfig, (NS,)):
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        await cluster.inference_available()
        await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
        await cluster.learner("Running")
        await wait_for(lambda: cluster.phase() == "Training")
    before = cluster.get(RLKDJOBS, "demo")
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await wait_for(lambda: runtime.metrics.reconciles._value.get() >= 3)
    assert cluster.get(RLKDJOBS, "demo")["status"] == before["status"]
    creates = cluster.creates()
    assert sorted(creates) == sorted(set(creates))  # every child created once, never again
    # Events are best effort (one posted after the kill would be lost), but never repeated.
    reasons = cluster.event_reasons()
    assert "Training" in reasons and len(reasons) == len(set(reasons))


async def test_a_bad_spec_fails_and_the_operator_keeps_serving_others(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job("broken", grpo={"learningRate": "fast"})  # slipped past no CRD here
        await cluster.apply_job("fine")
        await wait_for(lambda: cluster.phase("broken") == "Failed")
        failed = cluster.get(RLKDJOBS, "broken")["status"]["conditions"][-1]
        assert failed["reason"] == "InvalidSpec" and "spec.grpo.learningRate" in failed["message"]
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "fine-judge"))
        assert cluster.get(CONFIGMAPS, "broken-config") is None


async def test_a_spec_broken_while_training_gives_the_gpus_back(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await until_training(cluster)
        await cluster.patch_spec("demo", grpo={"learningRate": "fast"})
        await wait_for(lambda: cluster.phase() == "Failed")
        await wait_for(
            lambda: cluster.get(PYTORCHJOBS, "demo")["spec"]["runPolicy"]["suspend"] is True
        )
        replicas = {cluster.get(DEPLOYMENTS, f"demo-{r}")["spec"]["replicas"] for r in INFERENCE}
        assert replicas == {0}


async def test_a_missing_dataset_says_so_and_is_checked_again(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(dataset={"uri": "store://datasets/later.jsonl"})

        def store_condition() -> dict[str, Any] | None:
            conditions = (cluster.get(RLKDJOBS, "demo").get("status") or {}).get("conditions", [])
            return next((c for c in conditions if c["type"] == "StoreReady"), None)

        condition = await wait_for(store_condition)
        assert (condition["status"], condition["reason"]) == ("False", "DatasetMissing")
        assert "datasets/later.jsonl" in condition["message"] and cluster.phase() == "Provisioning"
        assert cluster.get(CONFIGMAPS, "demo-config") is None
        cluster.store("rlkd").put_bytes("datasets/later.jsonl", b"{}\n")
        await wait_for(lambda: store_condition()["status"] == "True")
        assert cluster.get(DEPLOYMENTS, "demo-judge") is not None  # applied before the status


def condition(cluster: Cluster, type_: str, job: str = "demo") -> dict[str, Any] | None:
    conditions = ((cluster.get(RLKDJOBS, job) or {}).get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == type_), None)


def operator_writes(cluster: Cluster, method: str, plural: str) -> int:
    return sum(
        1
        for r in cluster.emulator._requests
        if r.method.name == method
        and r.resource is not None
        and r.resource.plural == plural
        and "kmock" not in r.headers.get("User-Agent", "")
    )


async def test_an_unserved_learner_kind_is_a_condition_with_the_fix_not_a_request_storm(
    world,
) -> None:
    cluster, kubeconfig = world
    not_found = (404, "NotFound", "the server could not find the requested resource")
    cluster.emulator.refuse.update({("POST", "pytorchjobs"): not_found})
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await cluster.apply_job()
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        await cluster.inference_available()
        failed = await wait_for(lambda: condition(cluster, "ApplyFailed"))
        assert failed["reason"] == "PyTorchJobNotServed" and cluster.phase() == "Provisioning"
        assert "install the Kubeflow Training Operator" in failed["message"]
        await wait_for(lambda: "PyTorchJobNotServed" in cluster.event_reasons())
        retried = runtime.metrics.reconciles._value.get() + 2  # backing off: a few seconds
        await wait_for(lambda: runtime.metrics.reconciles._value.get() >= retried, timeout=60)
        # One create per failed attempt (one may be in flight), not a storm of them.
        posts = operator_writes(cluster, "POST", "pytorchjobs")
        assert 1 <= posts <= runtime.metrics.errors._value.get() + 1
        assert cluster.event_reasons().count("PyTorchJobNotServed") == 1  # one Warning

        del cluster.emulator.refuse["POST", "pytorchjobs"]  # the Training Operator installed
        await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
        await wait_for(lambda: condition(cluster, "ApplyFailed") is None)


@pytest.mark.parametrize(
    ("code", "reason", "phase"),
    [(403, "Forbidden", "Provisioning"), (422, "Invalid", "Failed")],
)
async def test_a_child_the_api_server_refuses_is_reported(
    world, code: int, reason: str, phase: str
) -> None:
    cluster, kubeconfig = world
    said = 'deployments "demo-gsrm" is forbidden: exceeded quota: gpus'
    cluster.emulator.refuse[("POST", "deployments")] = (code, reason, said)
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await cluster.apply_job()
        failed = await wait_for(lambda: condition(cluster, "ApplyFailed"))
        assert failed["reason"] == reason and said in failed["message"]
        await wait_for(lambda: cluster.phase() == phase)
        assert cluster.get(DEPLOYMENTS, "demo-gsrm") is None
        del cluster.emulator.refuse["POST", "deployments"]
        if phase == "Failed":  # the request itself is wrong: final until the spec changes
            assert ("ns1", "demo") not in runtime.world.failures
            # A real change: a patch that leaves the spec as it was is no new generation.
            await cluster.patch_spec("demo", dataset={"limit": 32})
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        await wait_for(lambda: condition(cluster, "ApplyFailed") is None)
        assert cluster.phase() == "Provisioning"


async def test_a_taken_name_is_never_adopted(world) -> None:
    cluster, kubeconfig = world
    theirs = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "demo-config", "namespace": NS},
        "data": {"owner": "someone else"},
    }
    await cluster.call("POST", CONFIGMAPS.path(NS), theirs)
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job()
        failed = await wait_for(lambda: condition(cluster, "ApplyFailed"))
        assert failed["reason"] == "NameConflict"
        conflict = "ConfigMap ns1/demo-config exists and is not controlled by RLKDJob demo"
        assert conflict in failed["message"]
        assert cluster.get(CONFIGMAPS, "demo-config")["data"] == theirs["data"]
        await cluster.call("DELETE", CONFIGMAPS.path(NS, "demo-config"))
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
        assert "owner" not in cluster.get(CONFIGMAPS, "demo-config")["data"]


async def test_a_credentials_secret_that_is_not_base64_is_reported(world) -> None:
    cluster, kubeconfig = world
    await cluster.call("PATCH", SECRETS.path(NS, "store"), {"data": {ACCESS_KEY_VAR: "%%%"}})
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job()
        store = await wait_for(lambda: condition(cluster, "StoreReady"))
        assert (store["status"], store["reason"]) == ("False", "StoreUnavailable")
        assert "not base64" in store["message"] and "%%%" not in store["message"]


async def test_the_default_store_without_a_secret_is_not_ready_though_the_operator_has_keys(
    world, monkeypatch
) -> None:
    """The operator's own keys would pass the check, but the job's pods would get none."""
    cluster, kubeconfig = world
    monkeypatch.setenv(ACCESS_KEY_VAR, cluster.s3.credentials.access_key)
    monkeypatch.setenv(SECRET_KEY_VAR, cluster.s3.credentials.secret_key)
    default = StorageSpec(endpoint=cluster.s3.endpoint, bucket=cluster.bucket)
    async with running_operator(kubeconfig, (NS,), OperatorDefaults(storage=default)):
        await cluster.apply_job(storage=None)
        store = await wait_for(lambda: condition(cluster, "StoreReady"))
        assert (store["status"], store["reason"]) == ("False", "NoCredentials")
        assert cluster.phase() == "Provisioning" and cluster.get(CONFIGMAPS, "demo-config") is None


async def passes(runtime: Any, count: int) -> None:
    """Wait until the poller has finished `count` more passes."""
    for _ in range(count):
        since = runtime.liveness.polled
        await wait_for(lambda since=since: runtime.liveness.polled != since)


async def test_a_hung_store_stalls_neither_the_poller_nor_other_jobs(world) -> None:
    """One job's store accepts connections and never answers: the poller keeps passing (so
    /healthz holds) and keeps reading the other jobs' progress while that read waits."""
    cluster, kubeconfig = world
    with hung_endpoint() as hung:
        # Reads that wait longer than the test: the hang lasts until it ends.
        async with running_operator(kubeconfig, (NS,), store_timeout_seconds=3600) as runtime:
            await cluster.apply_job("stuck", endpoint=hung.endpoint)
            await wait_for(lambda: hung.accepted)
            await passes(runtime, 2)  # the second began after the hung read did
            store = cluster.store()
            store.put_json(PROGRESS_KEY, {"stage": "training", "step": 3})
            await until_training(cluster)
            store.put_json(PROGRESS_KEY, {"stage": "training", "step": 7})
            await wait_for(lambda: cluster.get(RLKDJOBS, "demo")["status"]["progress"]["step"] == 7)
            # Its first reconcile still waits for the one read it sent: no status yet.
            assert hung.hanging == 1 and cluster.phase("stuck") is None


async def test_healthz_fails_once_the_poller_stops(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)) as runtime:
        await cluster.apply_job()
        await wait_for(lambda: runtime.liveness.polled and runtime.liveness.reconciled)
        report = await health(memo=runtime)
        assert report["secondsSincePoll"] >= 0 and report["secondsSinceReconcile"] >= 0
        runtime.poller.cancel()
        await wait_for(runtime.poller.done)
        with pytest.raises(kopf.PermanentError, match="poller is not running"):
            await health(memo=runtime)


TEACHER = {"source": "model", "model": {"model": "store://models/teacher"}}


async def job_done(cluster: Cluster, condition: str, reason: str, message: str = "") -> None:
    """Play the Job controller: the prepare Job ends with `condition` (Complete or Failed)."""
    job = cluster.get(JOBS, "demo-prepare")
    status = {
        "conditions": [{"type": condition, "status": "True", "reason": reason, "message": message}]
    }
    await cluster.set_status(JOBS, "demo-prepare", {**job, "status": status})


async def servers_available(cluster: Cluster, *roles: str) -> None:
    for role in roles:
        name = f"demo-{role}"
        await cluster.set_status(DEPLOYMENTS, name, available(cluster.get(DEPLOYMENTS, name)))


async def test_a_job_is_prepared_then_trains_with_the_teacher_scaled_down(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(teacher=TEACHER)
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-teacher"))
        assert cluster.get(JOBS, "demo-prepare") is None  # its servers are not up yet
        assert cluster.get(DEPLOYMENTS, "demo-judge")["spec"]["replicas"] == 0
        await servers_available(cluster, "gsrm", "teacher")
        await wait_for(lambda: cluster.phase() == "Preparing")
        job = cluster.get(JOBS, "demo-prepare")
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["rlkd", "prepare"]
        assert job["metadata"]["ownerReferences"][0]["kind"] == "RLKDJob"
        assert cluster.get(PYTORCHJOBS, "demo") is None

        cluster.store().put_json(PREPARE_KEY, PrepareSummary(finished=True, examples=64).to_dict())
        await job_done(cluster, "Complete", "CompletionsReached")
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-teacher")["spec"]["replicas"] == 0)
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge")["spec"]["replicas"] == 1)
        assert cluster.get(PYTORCHJOBS, "demo") is None  # the judge is not up yet
        await servers_available(cluster, "judge")
        await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))
        await cluster.learner("Running")
        await wait_for(lambda: cluster.phase() == "Training")
        assert cluster.get(DEPLOYMENTS, "demo-teacher")["spec"]["replicas"] == 0
        await wait_for(
            lambda: (
                cluster.event_reasons() == ["Provisioning", "Preparing", "Provisioning", "Training"]
            )
        )
        assert cluster.creates().count(("jobs", "demo-prepare")) == 1


async def test_a_failed_prepare_fails_the_job_with_its_reason_and_counts(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,)):
        await cluster.apply_job(teacher=TEACHER)
        await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-teacher"))
        await servers_available(cluster, "gsrm", "teacher")
        await wait_for(lambda: cluster.get(JOBS, "demo-prepare"))
        summary = PrepareSummary(finished=True, examples=64, failures={"gsrm_timeout": 64})
        cluster.store().put_json(PREPARE_KEY, summary.to_dict())
        message = "Job has reached the specified backoff limit"
        await job_done(cluster, "Failed", "BackoffLimitExceeded", message)
        await wait_for(lambda: cluster.phase() == "Failed")
        status = cluster.get(RLKDJOBS, "demo")["status"]
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert failed["reason"] == "BackoffLimitExceeded" and message in failed["message"]
        assert "failed: gsrm_timeout 64" in failed["message"]
        await wait_for(
            lambda: all(
                cluster.get(DEPLOYMENTS, f"demo-{r}")["spec"]["replicas"] == 0
                for r in ("gsrm", "judge", "teacher")
            )
        )
        assert cluster.get(PYTORCHJOBS, "demo") is None
        await wait_for(lambda: cluster.event_reasons()[-1:] == ["Failed"])


SOURCE_NS, SOURCE = "rlkd-system", "rlkd-s3"


async def default_store_secret(cluster: Cluster, **extra: str) -> dict[str, str]:
    """The default store's Secret in the operator's namespace, as the chart makes it (the
    bundled MinIO's holds more than the pods' two keys); its data."""
    keys = {
        ACCESS_KEY_VAR: cluster.s3.credentials.access_key,
        SECRET_KEY_VAR: cluster.s3.credentials.secret_key,
        **extra,
    }
    data = {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SOURCE}, "data": data}
    secret["metadata"]["namespace"] = SOURCE_NS
    await cluster.call("POST", SECRETS.path(SOURCE_NS), secret)
    return data


def on_default_store(cluster: Cluster) -> OperatorDefaults:
    default = StorageSpec(endpoint=cluster.s3.endpoint, bucket=cluster.bucket)
    default = default.model_copy(update={"credentials_secret": SOURCE})
    return OperatorDefaults(storage=default, namespace=SOURCE_NS)


async def test_a_job_on_the_default_store_gets_its_own_copy_of_the_store_secret(world) -> None:
    """The default store's Secret lives in the operator's namespace, where the job's pods cannot
    read it: the job gets a copy of the pods' two keys in its namespace, owned by the job, kept
    equal to the source, and written only when the source changes."""
    cluster, kubeconfig = world
    source = await default_store_secret(cluster, MINIO_ROOT_PASSWORD="root")
    async with running_operator(kubeconfig, (NS,), on_default_store(cluster)) as runtime:
        await cluster.apply_job(storage=None)
        copy = await wait_for(lambda: cluster.get(SECRETS, "demo-store-credentials"))
        assert copy["data"] == {k: source[k] for k in (ACCESS_KEY_VAR, SECRET_KEY_VAR)}
        assert copy["type"] == "Opaque" and copy["metadata"]["labels"][JOB_LABEL] == "demo"
        assert copy["metadata"]["annotations"]["rlkd.ai/copied-from"] == f"{SOURCE_NS}/{SOURCE}"
        [owner] = copy["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("RLKDJob", "demo", True)
        store = await wait_for(lambda: condition(cluster, "StoreReady"))
        assert store["status"] == "True", store
        await until_learner_on(cluster)
        spec = cluster.get(PYTORCHJOBS, "demo")["spec"]["pytorchReplicaSpecs"]["Master"]
        volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
        assert volumes["store-credentials"]["secret"]["secretName"] == "demo-store-credentials"

        await cluster.learner("Running")
        await wait_for(lambda: cluster.phase() == "Training")
        copies = f"PATCH {SECRETS.path(NS, 'demo-store-credentials')}"
        await poll_passes(runtime, 3)  # each pass reconciles the training job
        assert copies not in writes_sent(cluster.emulator)  # an unchanged source: no writes
        rotated = base64.b64encode(b"rotated").decode()
        await cluster.call(
            "PATCH", SECRETS.path(SOURCE_NS, SOURCE), {"data": {SECRET_KEY_VAR: rotated}}
        )
        await wait_for(
            lambda: (
                cluster.get(SECRETS, "demo-store-credentials")["data"][SECRET_KEY_VAR] == rotated
            )
        )
        assert "MINIO_ROOT_PASSWORD" not in cluster.get(SECRETS, "demo-store-credentials")["data"]


async def until_learner_on(cluster: Cluster) -> None:
    await wait_for(lambda: cluster.get(DEPLOYMENTS, "demo-judge"))
    await cluster.inference_available()
    await wait_for(lambda: cluster.get(PYTORCHJOBS, "demo"))


async def test_a_missing_default_store_secret_is_reported_and_nothing_is_copied(world) -> None:
    cluster, kubeconfig = world
    async with running_operator(kubeconfig, (NS,), on_default_store(cluster)):
        await cluster.apply_job(storage=None)
        store = await wait_for(lambda: condition(cluster, "StoreReady"))
        assert (store["status"], store["reason"]) == ("False", "StoreUnavailable")
        assert f"Secret {SOURCE_NS}/{SOURCE} (the default store's Secret" in store["message"]
        assert "RLKD_DEFAULT_STORAGE_CREDENTIALS_SECRET" in store["message"]
        assert cluster.get(SECRETS, "demo-store-credentials") is None
        await default_store_secret(cluster)
        await wait_for(lambda: cluster.get(SECRETS, "demo-store-credentials"))
        await wait_for(lambda: condition(cluster, "StoreReady")["status"] == "True")


async def test_a_secret_of_the_copys_name_that_is_not_the_jobs_is_never_written(world) -> None:
    """A Secret that happens to be called <job>-store-credentials is the user's: the operator
    neither patches nor adopts it, says so in the status, and starts no pod that would read it."""
    cluster, kubeconfig = world
    await default_store_secret(cluster)
    theirs = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-store-credentials"}}
    theirs["data"] = {"note": base64.b64encode(b"mine").decode()}
    await cluster.call("POST", SECRETS.path(NS), theirs)
    async with running_operator(kubeconfig, (NS,), on_default_store(cluster)):
        await cluster.apply_job(storage=None)
        failed = await wait_for(lambda: condition(cluster, "ApplyFailed"))
        assert failed["reason"] == "NameConflict" and "demo-store-credentials" in failed["message"]
        kept = cluster.get(SECRETS, "demo-store-credentials")
        assert kept["data"] == theirs["data"] and not kept["metadata"].get("ownerReferences")
        assert cluster.get(DEPLOYMENTS, "demo-judge") is None
