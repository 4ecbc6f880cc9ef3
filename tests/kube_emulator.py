"""The real kopf operator against kmock's Kubernetes emulator, in the caller's event loop.

The emulator is an in-memory API server (no scheduler, no controllers, no garbage collector):
tests play the controllers by patching children's status themselves (or run tests/podrunner).
What it lacks and the operator relies on is added here: resourceVersion, uid,
creationTimestamp, generation and the namespace of an object created without one; and,
as the real server does, resource quantities stored in canonical form (`1` -> `"1"`, `0.5` ->
`"500m"`), so a child compared naively with its live copy shows up as a write storm here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import kopf
import yaml

from rlkd.k8s import OperatorDefaults
from rlkd.k8s.quantity import QuantityError, canonical
from rlkd_operator.main import build_runtime
from rlkd_operator.resources import ALL, RLKDJOBS, APIResource
from rlkd_operator.settings import Options
from tests.podrunner.kubeapi import USER_AGENT as PODRUNNER_AGENT


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the metadata a real API server assigns on every write."""

    _versions: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _serving: set[kmock.Request] = attrs.field(factory=set, init=False)
    refuse: dict[tuple[str, str], tuple[int, str, str]] = attrs.field(factory=dict, init=False)
    """(method, plural) -> (HTTP status, reason, message): what an API server answers that
    cannot take a request (a kind not served, a quota, an admission webhook)."""

    async def _handle(self, request: kmock.Request) -> Any:
        if request.resource is not None and (
            refusal := self.refuse.get((request.method.name, request.resource.plural))
        ):
            code, reason, message = refusal
            status = {"kind": "Status", "status": "Failure", "code": code}
            return aiohttp.web.json_response(
                {**status, "reason": reason, "message": message}, status=code
            )
        writes = (kmock.action.CREATE, kmock.action.UPDATE)
        if request.resource is not None and request.action in writes:
            try:
                data = canonical_quantities(request.resource.plural, request.data)
            except QuantityError as exc:
                body = {"kind": "Status", "status": "Failure", "code": 422, "reason": "Invalid"}
                return aiohttp.web.json_response({**body, "message": str(exc)}, status=422)
            # Request is frozen, and a copy would lose its parsed intentions: stamp in place.
            object.__setattr__(request, "data", data)
            object.__setattr__(request, "data", self._stamped(request))
        self._serving.add(request)
        try:
            return await super()._handle(request)
        finally:
            self._serving.discard(request)

    def __iter__(self) -> Any:
        """Only the requests being served. kmock matches each request's reactions by scanning
        this, which over the whole history is quadratic; `_requests` still holds them all."""
        return iter(list(self._serving))

    def _stamped(self, request: kmock.Request) -> Any:
        version = str(next(self._versions))
        if request.action == kmock.action.CREATE:
            meta = {
                "resourceVersion": version,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": datetime.datetime.now(datetime.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
                "generation": 1,
            }
            given = request.data.get("metadata", {})
            if "name" not in given and "generateName" in given:  # kopf's Events
                meta["name"] = f"{given['generateName']}{version}"
            if request.namespace and "namespace" not in given:  # the path's, as the server does
                meta["namespace"] = request.namespace
            return {**request.data, "metadata": {**given, **meta}}
        if isinstance(request.data, list):  # a JSON patch (kopf's finalizers)
            return [
                *request.data,
                {"op": "replace", "path": "/metadata/resourceVersion", "value": version},
            ]
        meta: dict[str, Any] = {"resourceVersion": version}
        key = (request.resource, request.namespace, request.name)
        if "spec" in request.data and request.subresource is None and key in self.objects:
            stored = self.objects[key].raw
            generation = stored.get("metadata", {}).get("generation", 1)
            # As the API server: a spec that the patch leaves as it was is no new generation.
            changed = merged(stored.get("spec"), request.data["spec"]) != stored.get("spec")
            meta["generation"] = generation + changed
        return {**request.data, "metadata": {**request.data.get("metadata", {}), **meta}}

    def stored(self, resource: Any, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object, or None."""
        key = (_resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return dict(self.objects[key].raw)


def merged(target: Any, patch: Any) -> Any:
    """`target` after a JSON merge patch (RFC 7386): null deletes, objects merge, else replace."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key), value)
    return out


POD_TEMPLATES = {"deployments", "jobs", "pytorchjobs", "pods"}
"""Kinds with pod specs whose container resources the API server canonicalises."""


def canonical_quantities(plural: str | None, data: Any) -> Any:
    """`data` (an object or a merge patch) with every container's requests and limits in the
    API server's canonical form. Merge patches replace lists whole, so a patch's containers
    are complete and canonicalising them is what the server's stored result would hold."""
    if plural not in POD_TEMPLATES or not isinstance(data, dict):
        return data
    return _canonical(data)


def _canonical(node: Any) -> Any:
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("containers", "initContainers") and isinstance(value, list):
            value = [
                {**c, "resources": _canonical_resources(c["resources"])}
                if isinstance(c, dict) and isinstance(c.get("resources"), dict)
                else c
                for c in value
            ]
        out[key] = _canonical(value)
    return out


def _canonical_resources(resources: dict[str, Any]) -> dict[str, Any]:
    out = dict(resources)
    for key in ("requests", "limits"):
        if isinstance(resources.get(key), dict):
            out[key] = {
                name: None if amount is None else canonical(amount)
                for name, amount in resources[key].items()
            }
    return out


def _resource(api: Any) -> kmock.resource:
    return kmock.resource(api.group, api.version, api.plural.partition("/")[0])


NAMESPACES = APIResource("", "v1", "namespaces", "Namespace", (), namespaced=False)
"""kopf waits for namespaces in discovery even when it never lists them (scanning is off)."""


def declare(emulator: Emulator) -> None:
    """Every resource the operator watches, writes or reads (rlkd_operator.resources)."""
    for api in (*ALL, NAMESPACES):
        if "/" in api.plural:
            continue  # subresources below
        subresources = {"status"} if api is RLKDJOBS else set()
        emulator.resources[_resource(api)] = kmock.ResourceInfo(
            kind=api.kind,
            singular=api.kind.lower(),
            namespaced=api.namespaced,
            verbs={"list", "watch", "get", "create", "patch", "delete"},
            subresources=subresources,
        )


@contextlib.asynccontextmanager
async def kube_emulator(tmp_path: Path) -> AsyncIterator[tuple[Emulator, Path]]:
    """A running emulator on 127.0.0.1 and a kubeconfig that points at it."""
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        declare(emulator)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {"name": "emulator", "cluster": {"server": str(server.url).rstrip("/")}}
                    ],
                    "users": [{"name": "test", "user": {"token": "test-token"}}],
                    "contexts": [
                        {"name": "emulator", "context": {"cluster": "emulator", "user": "test"}}
                    ],
                    "current-context": "emulator",
                }
            )
        )
        yield emulator, kubeconfig


@contextlib.asynccontextmanager
async def running_operator(
    kubeconfig: Path,
    namespaces: tuple[str, ...],
    defaults: OperatorDefaults | None = None,
    poll_seconds: float = 0.2,
    store_timeout_seconds: float = Options.store_timeout_seconds,
) -> AsyncIterator[Any]:
    """The operator (standalone, explicit namespaces) in a task; yields its runtime (kopf's
    memo). Leaving the block kills it with a cancellation, mid-flight whatever it was doing."""
    options = Options(
        namespaces=namespaces,
        standalone=True,
        poll_seconds=poll_seconds,
        store_timeout_seconds=store_timeout_seconds,
    )
    runtime = build_runtime(options, defaults or OperatorDefaults(), str(kubeconfig))
    ready = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            namespaces=namespaces,
            standalone=True,
            memo=runtime,
            ready_flag=ready,
            settings=kopf.OperatorSettings(),
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield runtime
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if runtime.poller is not None:
            runtime.poller.cancel()
        runtime.stores.close()


async def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail after a generous deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := check()):
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s: {check}")
        await asyncio.sleep(0.05)
    return result


WRITES = frozenset({"POST", "PATCH", "PUT", "DELETE"})
NOT_THE_OPERATOR = ("kmock", PODRUNNER_AGENT)
"""User-Agents of requests the test makes: its own (kmock's client) and the pod runner's."""


def by_operator(request: kmock.Request) -> bool:
    """Whether the operator sent `request` (not the test, not the pod runner)."""
    agent = request.headers.get("User-Agent", "")
    return not any(other in agent for other in NOT_THE_OPERATOR)


def writes_sent(emulator: Emulator) -> list[str]:
    """'METHOD path' of every write the operator sent."""
    return [
        f"{r.method.name} {r.url.path}"
        for r in emulator._requests
        if r.method.name in WRITES and by_operator(r)
    ]


async def poll_passes(runtime: Any, passes: int) -> None:
    """Wait until the operator's poller has finished `passes` more passes."""
    for _ in range(passes):
        last = runtime.liveness.polled
        await wait_for(lambda last=last: runtime.liveness.polled != last)


def requests_outside(emulator: Emulator) -> list[str]:
    """Requests to resources or with verbs outside rlkd_operator.resources (the ClusterRole),
    as 'verb resource' lines; discovery, the test's and the pod runner's are not the operator's."""
    verbs = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}
    allowed = {(verb, api.group, api.plural) for api in ALL for verb in api.verbs}
    out = []
    for request in emulator._requests:
        if request.resource is None or request.resource.plural is None or not by_operator(request):
            continue
        verb = {"LIST": "list", "WATCH": "watch"}.get(
            request.action.name, verbs[request.method.name]
        )
        plural = request.resource.plural + (
            f"/{request.subresource}" if request.subresource else ""
        )
        if (verb, request.resource.group, plural) not in allowed:
            out.append(f"{verb} {request.resource.group}/{plural}")
    return out
