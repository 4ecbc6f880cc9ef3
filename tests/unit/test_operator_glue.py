"""The small helpers of the operator's glue: merge patches, the watched world, API paths, and
whose keys a store gets."""

from __future__ import annotations

import asyncio
import base64
import json
from http import HTTPStatus
from typing import Any

import pytest
import urllib3
from kubernetes import client

from rlkd.errors import StoreError
from rlkd.k8s import OperatorDefaults
from rlkd.k8s.store_secret import SecretRef
from rlkd.spec.job import StorageSpec
from rlkd.spec.progress import PROGRESS_KEY
from rlkd.spec.resource import RLKDJob
from rlkd.store import Credentials, LocalStore
from rlkd_operator.decide import Needs, resolve
from rlkd_operator.handlers import Liveness, stuck
from rlkd_operator.kube import (
    RBAC_FIX,
    credentials_from_secret,
    failure_of,
    merge_patch,
    unanswered,
)
from rlkd_operator.resources import DEPLOYMENTS, PYTORCHJOBS, RLKDJOB_STATUS, SECRETS
from rlkd_operator.stores import Stores, _document
from rlkd_operator.world import World, retry_delay
from tests.operator_fixtures import STORAGE, job_body


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({}, {"phase": "Pending"}, {"phase": "Pending"}),
        ({"phase": "Training", "message": "m"}, {"phase": "Training"}, {"message": None}),
        (
            {"progress": {"step": 1, "meanReward": 2.0}},
            {"progress": {"step": 2}},
            {"progress": {"step": 2, "meanReward": None}},
        ),
        ({"conditions": [{"type": "A"}]}, {"conditions": [{"type": "A"}]}, {}),
        ({"conditions": [{"type": "A"}]}, {"conditions": []}, {"conditions": []}),
    ],
)
def test_merge_patch_turns_old_into_new(old: dict, new: dict, patch: dict) -> None:
    assert merge_patch(old, new) == patch


def child(name: str, version: str, job: str | None = "demo") -> dict[str, Any]:
    labels = {"rlkd.ai/job": job} if job else {}
    meta = {"name": name, "namespace": "ns", "resourceVersion": version, "labels": labels}
    return {"kind": "Deployment", "metadata": meta}


def test_the_world_keeps_the_newest_child_and_finds_its_job() -> None:
    world = World()
    assert world.see_child(child("demo-gsrm", "7")) == ("ns", "demo")
    world.see_child(child("demo-gsrm", "5"))  # a late watch event older than our own write
    assert (
        world.children(("ns", "demo"))[("Deployment", "demo-gsrm")]["metadata"]["resourceVersion"]
        == "7"
    )
    world.see_child(child("demo-gsrm", "8"), deleted=True)
    assert world.children(("ns", "demo")) == {}
    assert world.see_child(child("other", "1", job=None)) is None


def test_a_resync_drops_what_the_lists_lack_unless_it_changed_since_they_were_asked() -> None:
    world = World()
    demo, gone = job_body("demo", "ns"), job_body("gone", "ns")
    world.see_job(demo), world.see_job(gone)
    for name in ("demo-gsrm", "demo-judge", "demo-config"):
        world.see_child(child(name, "3"))
    before = world.snapshot()
    world.see_child(child("demo-config", "9"))  # our own write while the lists were out
    world.see_child(child("demo-new", "10"))  # a watch event for a child created meanwhile
    lists = [child("demo-gsrm", "3"), child("demo-judge", "4"), child("orphan", "2", job="x")]
    gone_jobs, changed = world.resync(before, [demo], lists)
    assert gone_jobs == {("ns", "gone")} and ("ns", "gone") not in world.jobs
    assert changed == {("ns", "demo"), ("ns", "x")}  # judge refreshed; x: a child, no job
    names = {name for _, name in world.children(("ns", "demo"))}
    assert names == {"demo-gsrm", "demo-judge", "demo-config", "demo-new"}
    judge = world.children(("ns", "demo"))[("Deployment", "demo-judge")]
    assert judge["metadata"]["resourceVersion"] == "4"
    # The next resync, with nothing written in between, drops what the lists still lack.
    gone_jobs, changed = world.resync(world.snapshot(), [demo], lists[:2])
    assert gone_jobs == set() and changed == {("ns", "demo"), ("ns", "x")}
    assert {name for _, name in world.children(("ns", "demo"))} == {"demo-gsrm", "demo-judge"}
    assert world.children(("ns", "x")) == {}


async def test_a_delete_racing_a_reconcile_never_lets_two_reconciles_of_one_job_run() -> None:
    world = World()
    key = world.see_job(job_body())
    running, most = 0, 0
    release = asyncio.Event()

    async def reconcile() -> None:
        nonlocal running, most
        async with world.lock(key):
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1

    first = asyncio.create_task(reconcile())
    await asyncio.sleep(0)  # inside, waiting on the network
    queued = asyncio.create_task(reconcile())
    await asyncio.sleep(0)  # waiting for the lock
    world.forget_job(key)  # the job was deleted ...
    world.see_job(job_body())  # ... and created again under its name
    recreated = asyncio.create_task(reconcile())
    for _ in range(3):
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, queued, recreated)
    assert most == 1


@pytest.mark.parametrize(
    ("resource", "args", "path"),
    [
        (DEPLOYMENTS, ("ns",), "/apis/apps/v1/namespaces/ns/deployments"),
        (
            RLKDJOB_STATUS,
            ("ns", "demo"),
            "/apis/rlkd.ai/v1alpha1/namespaces/ns/rlkdjobs/demo/status",
        ),
        (SECRETS, ("ns", "store"), "/api/v1/namespaces/ns/secrets/store"),
    ],
)
def test_resource_paths(resource: Any, args: tuple[str, ...], path: str) -> None:
    assert resource.path(*args) == path


@pytest.mark.parametrize(
    "defaults", [OperatorDefaults(), OperatorDefaults(storage=StorageSpec.model_validate(STORAGE))]
)
async def test_a_store_without_credentials_secret_is_not_ready(defaults: OperatorDefaults) -> None:
    """The job's pods get keys only from spec.storage.credentialsSecret: without one they have
    none, whatever keys the operator holds, so the check must not pass."""

    async def secret_keys(secret: SecretRef, what: str) -> Credentials:
        raise AssertionError("asked for a Secret")

    body = job_body(storage=None)
    if defaults.storage is None:  # a store the job names itself
        body["spec"]["storage"] = {k: v for k, v in STORAGE.items() if k != "credentialsSecret"}
    else:  # the operator's default store, which names no Secret either
        defaults = OperatorDefaults(
            storage=defaults.storage.model_copy(update={"credentials_secret": None})
        )
    job = resolve(body, defaults)
    assert isinstance(job, RLKDJob)
    stores = Stores(secret_keys, defaults, timeout=1.0, retry_after=1.0)
    check = (await stores.observe(job, Needs(True, False))).check
    assert check is not None and (check.ready, check.reason) == (False, "NoCredentials")
    assert "credentialsSecret" in check.message and "workload identity" in check.message


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"AWS_ACCESS_KEY_ID": b64("id"), "AWS_SECRET_ACCESS_KEY": b64("key")}, None),
        ({"AWS_ACCESS_KEY_ID": b64("id")}, "has no AWS_SECRET_ACCESS_KEY"),
        ({"AWS_ACCESS_KEY_ID": "%%%", "AWS_SECRET_ACCESS_KEY": b64("key")}, "not base64"),
        (
            {"AWS_ACCESS_KEY_ID": b64("id"), "AWS_SECRET_ACCESS_KEY": b64("key\n")},
            "AWS_SECRET_ACCESS_KEY has whitespace around it",
        ),
    ],
)
def test_a_secrets_keys_are_read_as_the_pods_read_them(
    data: dict[str, str], problem: str | None
) -> None:
    """The inference servers take the keys from the Secret as they are (environment variables),
    so a value that only works once stripped is a problem, not a key."""
    if problem is None:
        assert credentials_from_secret(data, "Secret ns/store") == Credentials("id", "key")
        return
    with pytest.raises(StoreError, match=problem) as caught:
        credentials_from_secret(data, "Secret ns/store")
    assert "Secret ns/store" in str(caught.value) and "key\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("failures", "delay"), [(1, 30.0), (2, 60.0), (3, 120.0), (5, 480.0), (6, 600.0), (40, 600.0)]
)
def test_a_failing_job_is_retried_ever_less_often(failures: int, delay: float) -> None:
    assert retry_delay(failures, 30.0) == delay


@pytest.mark.parametrize(
    ("polled", "now", "poll_seconds", "looks_stuck"),
    [
        (None, 299.0, 1.0, False),  # no pass yet, but not for long
        (None, 301.0, 1.0, True),
        (1000.0, 1300.0, 1.0, False),
        (1000.0, 1301.0, 1.0, True),
        (1000.0, 1500.0, 60.0, False),  # ten intervals of a slow poll
        (1000.0, 1601.0, 60.0, True),
    ],
)
def test_the_operator_looks_stuck_when_the_poller_has_not_passed_for_long(
    polled: float | None, now: float, poll_seconds: float, looks_stuck: bool
) -> None:
    problem = stuck(Liveness(started=0.0, polled=polled), now, poll_seconds)
    assert (problem is not None) is looks_stuck


def status_body(reason: str, message: str, **details: str) -> str:
    return json.dumps({"kind": "Status", "reason": reason, "message": message, "details": details})


@pytest.mark.parametrize(
    ("status", "body", "reason", "permanent", "says"),
    [
        (404, "404 page not found", "PyTorchJobNotServed", False, "Kubeflow Training Operator"),
        (
            404,
            status_body("NotFound", 'namespaces "ns" not found', kind="namespaces"),
            "NotFound",
            False,
            'namespaces "ns" not found',
        ),
        (422, status_body("Invalid", "spec.runPolicy: Invalid value"), "Invalid", True, "422"),
        (400, status_body("BadRequest", "bad"), "BadRequest", True, "rejected"),
        (403, status_body("Forbidden", "exceeded quota"), "Forbidden", False, "exceeded quota"),
        (503, None, "ServiceUnavailable", False, "refused"),
    ],
)
def test_an_api_error_on_a_child_says_what_and_whether_a_retry_can_help(
    status: int, body: str | None, reason: str, permanent: bool, says: str
) -> None:
    error = client.ApiException(status=status, reason=HTTPStatus(status).phrase)
    error.body = body
    manifest = {"kind": "PyTorchJob", "metadata": {"name": "demo", "namespace": "ns"}}
    failure = failure_of(PYTORCHJOBS, manifest, error)
    assert (failure.reason, failure.permanent) == (reason, permanent)
    assert says in failure.message and "PyTorchJob ns/demo" in failure.message
    assert RBAC_FIX not in failure.message  # a quota is no missing permission


@pytest.mark.parametrize(
    "said",
    [
        'pytorchjobs.kubeflow.org "demo" is forbidden: User "system:serviceaccount:rlkd-system:'
        'rlkd-operator" cannot create resource "pytorchjobs" in API group "kubeflow.org" in the '
        'namespace "ns"',
        'pytorchjobs.kubeflow.org "demo" is forbidden: cannot set blockOwnerDeletion if an '
        "ownerReference refers to a resource you can't set finalizers on",
    ],
)
def test_a_missing_permission_says_where_the_operators_rbac_comes_from(said: str) -> None:
    error = client.ApiException(status=403, reason="Forbidden")
    error.body = status_body("Forbidden", said)
    manifest = {"kind": "PyTorchJob", "metadata": {"name": "demo", "namespace": "ns"}}
    failure = failure_of(PYTORCHJOBS, manifest, error)
    assert failure.message.endswith(RBAC_FIX) and not failure.permanent


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        (urllib3.exceptions.MaxRetryError(None, "/", "Connection refused"), True),
        (ConnectionRefusedError(111, "Connection refused"), True),
        (client.ApiException(status=0, reason="no answer"), True),
        (client.ApiException(status=503, reason="Service Unavailable"), True),
        (client.ApiException(status=409, reason="Conflict"), False),
        (KeyError("metadata"), False),
    ],
)
def test_an_api_server_that_does_not_answer_is_told_apart_from_a_bug(
    error: BaseException, unreachable: bool
) -> None:
    assert unanswered(error) is unreachable


def test_a_progress_document_the_operator_cannot_read_says_which_field(tmp_path) -> None:
    """A learner of another version writes fields this operator does not know: say which."""
    store = LocalStore(tmp_path)
    store.put_json(PROGRESS_KEY, {"stage": "flying", "step": 3})
    with pytest.raises(StoreError, match=r"is not a progress document \(1 errors; stage: Input"):
        _document(store)
