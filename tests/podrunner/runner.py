"""The pod runner: beside kopf on the Kubernetes emulator, it plays the kubelet and the
controllers the emulator lacks for rlkd's children (Deployments, batch Jobs, PyTorchJobs), running
each pod's container as a local process (tests/podrunner/workloads.py says how each kind runs).

    async with PodRunner(api_url, ("ns1",), tmp_path / "pods") as runner:
        await runner.wait_for(lambda: runner.ready("Deployment", "demo-gsrm"))
        runner.service_url("ns1", "demo-gsrm")          # where vLLM's Service answers here
        runner.kill("PyTorchJob", "demo", signal.SIGKILL)
    # every process group it started is gone here; logs stay in <workdir>/logs

Objects without the rlkd.ai/job label are not its business. Each Deployment listens on a
loopback port of its own (`ports`), which the Services that select it stand for.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from rlkd.k8s.naming import JOB_LABEL
from tests.podrunner.container import (
    container_env,
    decoded,
    fixed_path_overrides,
    lay_out_volumes,
    on_loopback,
    references,
    server_flags,
    the_container,
    under_mounts,
)
from tests.podrunner.errors import NotYet, PodError
from tests.podrunner.images import LocalImage, image_table, local_image
from tests.podrunner.kubeapi import KubeAPI
from tests.podrunner.process import ContainerProcess
from tests.podrunner.status import now
from tests.podrunner.workloads import (
    DeploymentWorkload,
    JobWorkload,
    PyTorchJobWorkload,
    Workload,
)
from tests.s3server import free_ports

WORKLOADS: dict[str, type[Workload]] = {
    "Deployment": DeploymentWorkload,
    "Job": JobWorkload,
    "PyTorchJob": PyTorchJobWorkload,
}
GRACE_SECONDS = 30.0
"""terminationGracePeriodSeconds' default: SIGTERM, then SIGKILL after this."""


class PodRunner:
    """Runs the pods of every rlkd-labelled workload in `namespaces` of the API server at
    `api_url`; `workdir` holds the pods' volumes, a shared HOME (unless `home` names one) and
    `logs/` (one file per pod, `<namespace>.<pod>.log`, restarts appended; podrunner.log: what
    the runner did). Without `images`, the default table (tests/podrunner/images.py)."""

    def __init__(
        self,
        api_url: str,
        namespaces: tuple[str, ...],
        workdir: Path,
        images: Mapping[str, LocalImage] | None = None,
        *,
        poll_seconds: float = 0.2,
        probe_seconds: float = 1.0,
        grace_seconds: float = GRACE_SECONDS,
        home: Path | None = None,
    ) -> None:
        self.namespaces = namespaces
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.images = image_table() if images is None else dict(images)
        self.poll_seconds = poll_seconds
        self.probe_seconds = probe_seconds
        """How often a pod's readiness probe runs (its periodSeconds, 10 s, is long for tests)."""
        self.grace_seconds = grace_seconds
        self.home = home or workdir / "home"
        """HOME of every container (the node's: vLLM's and torch's caches); pass one that
        outlives the run to keep them (DeepSpeed's compiled extension, ~1 min to build)."""
        self.ports: dict[tuple[str, str], int] = {}
        """(namespace, Deployment or `<pytorchjob>-master-0`) -> its loopback port."""
        self.failure: BaseException | None = None
        self._api_url = api_url
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._deployments: dict[tuple[str, str], dict[str, Any]] = {}
        self._workloads: dict[tuple[str, str, str], Workload] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started: list[tuple[str, ContainerProcess]] = []
        self._poller: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PodRunner:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.api = KubeAPI(self._api_url)
        self.http = aiohttp.ClientSession()
        self._poller = asyncio.create_task(self._poll())
        self._poller.add_done_callback(self._failed)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop watching, stop every pod (process groups, SIGTERM then SIGKILL), close."""
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        for workload in self._workloads.values():
            workload.deleted = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for description, process in self._started:
            if process.group_alive():  # a workload that failed mid-start: end it all the same
                self.note(f"{description}: still running at close; killed")
                await process.stop(0)
        await self.http.close()
        await self.api.close()
        if self.failure is not None and exc is None:
            raise self.failure

    # What a test asks of it.

    def check(self) -> None:
        """Raise what stopped the runner (an unknown image, a pod it cannot play), if anything."""
        if self.failure is not None:
            raise self.failure

    async def wait_for(self, check: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Poll `check` until it returns something truthy; fail at once if the runner failed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := check()):
            self.check()
            if loop.time() > deadline:
                raise TimeoutError(f"condition not met within {timeout} s: {check}")
            await asyncio.sleep(0.05)
        return result

    def workload(self, kind: str, name: str, namespace: str | None = None) -> Workload | None:
        """The live workload of that object (the only namespace when none is given)."""
        for (k, ns, n), workload in self._workloads.items():
            if (k, n) == (kind, name) and namespace in (None, ns) and not workload.deleted:
                return workload
        return None

    def pids(self, kind: str, name: str, namespace: str | None = None) -> list[int]:
        """The main pids (= process groups) of the object's running containers."""
        workload = self.workload(kind, name, namespace)
        if workload is None:
            return []
        return [p.process.pid for p in workload.pods.values() if p.process.returncode is None]

    def kill(
        self,
        kind: str,
        name: str,
        sig: signal.Signals = signal.SIGKILL,
        namespace: str | None = None,
    ) -> list[int]:
        """Send `sig` to the process groups of the object's running containers (what a
        container's OOM kill or `kill` does); the pids signalled. The workload reacts as its
        controller would (restart, replace, or fail)."""
        workload = self.workload(kind, name, namespace)
        pids = workload.signal(sig) if workload is not None else []
        if not pids:
            raise PodError(f"{kind} {name}: no running container to signal")
        self.note(f"{workload}: sent {sig.name} to {pids}")
        return pids

    def restarts(self, kind: str, name: str, namespace: str | None = None) -> int:
        """Container restarts of the object's pods so far."""
        workload = self.workload(kind, name, namespace)
        return workload.restarts if workload else 0

    def alive(self) -> list[str]:
        """Every container process group the runner started that still has a process in it."""
        return [
            f"{description} (pid {process.pid})"
            for description, process in self._started
            if process.group_alive()
        ]

    def service_url(self, namespace: str, service: str) -> str:
        """http://127.0.0.1:<port>: where the Service's pods answer here."""
        return f"http://127.0.0.1:{self.address(namespace, service)}"

    def log(self, pod: str, namespace: str | None = None) -> Path:
        """The log file of a pod (`<deployment>-0`, `<job>-<attempt>`, `<job>-master-0`)."""
        return self.logs / f"{namespace or self.namespaces[0]}.{pod}.log"

    # Ports and Services.

    def port_of(self, namespace: str, name: str) -> int:
        """The loopback port of a Deployment's pod (or a PyTorchJob's master), fixed once given."""
        if (namespace, name) not in self.ports:
            [self.ports[namespace, name]] = free_ports(1)
        return self.ports[namespace, name]

    def address(self, namespace: str, service: str) -> int:
        """The port behind a Service: that of the Deployment whose pods its selector selects."""
        body = self._services.get((namespace, service))
        if body is None:
            raise NotYet(f"Service {namespace}/{service} does not exist yet")
        selector = body["spec"].get("selector") or {}
        for (ns, name), deployment in self._deployments.items():
            labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
            if ns == namespace and selector and selector.items() <= labels.items():
                return self.port_of(ns, name)
        raise NotYet(f"Service {namespace}/{service} selects no Deployment yet")

    # Running a pod.

    async def launch(
        self,
        workload: Workload,
        pod: str,
        template: dict[str, Any],
        *,
        port: int | None = None,
        extra_env: Mapping[str, str] | None = None,
        note: str = "start",
        fresh: bool = True,
    ) -> ContainerProcess:
        """Start the container of `template` as pod `pod` of `workload`: volumes laid out under
        the pod's directory (anew unless not `fresh`: a restart keeps its pod), env resolved and
        moved onto loopback, a server (`port`) listening on its own port."""
        spec = template["spec"]
        container = the_container(template)
        image = local_image(self.images, container["image"])
        refs = {}
        for kind, name in references(spec):
            body = await self.api.get(kind, workload.namespace, name)
            if body is not None:
                refs[kind, name] = decoded(kind, body)
        root = self.workdir / "pods" / workload.namespace / pod
        if fresh and root.exists():
            shutil.rmtree(root)  # a new pod of the same name: new volumes
        root.mkdir(parents=True, exist_ok=True)
        mounts = lay_out_volumes(spec, container, refs, root / "volumes")
        variables = {**container_env(container, refs), **(extra_env or {})}
        variables = on_loopback(variables, self.address)
        variables = {k: under_mounts(v, mounts) for k, v in variables.items()}
        env = {
            "PATH": f"{image.bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "HOSTNAME": pod,
            "LANG": "C.UTF-8",
            **image.env,
            **variables,
            **fixed_path_overrides(mounts),
        }
        argv = [
            under_mounts(w, mounts)
            for w in image.argv(container.get("command") or [], container.get("args") or [])
        ]
        if port is not None:
            argv = server_flags(argv, port)
        process = await ContainerProcess.start(
            argv, env, root, self.log(pod, workload.namespace), note
        )
        self._started.append((f"{workload} pod {pod}", process))
        where = f" on port {port}" if port is not None else ""
        self.note(f"{workload}: pod {pod} {note}, pid {process.pid}{where}")
        return process

    def note(self, line: str) -> None:
        """One line of podrunner.log."""
        with (self.logs / "podrunner.log").open("a") as out:
            out.write(f"{now()} {line}\n")

    # The watch loop.

    async def _poll(self) -> None:
        while True:
            await self._sync()
            await asyncio.sleep(self.poll_seconds)

    async def _sync(self) -> None:
        seen: set[tuple[str, str, str]] = set()
        services, deployments = {}, {}
        listed: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ("Service", *WORKLOADS)}
        for namespace in self.namespaces:
            for kind in listed:
                items = await self.api.list(kind, namespace)
                listed[kind] += [
                    i for i in items if JOB_LABEL in (i["metadata"].get("labels") or {})
                ]
        for body in listed["Service"]:
            services[body["metadata"]["namespace"], body["metadata"]["name"]] = body
        for body in listed["Deployment"]:
            deployments[body["metadata"]["namespace"], body["metadata"]["name"]] = body
        self._services, self._deployments = services, deployments
        for kind, make in WORKLOADS.items():
            for body in listed[kind]:
                key = (kind, body["metadata"]["namespace"], body["metadata"]["name"])
                seen.add(key)
                current = self._workloads.get(key)
                if current is not None and current.uid != body["metadata"].get("uid"):
                    await self._forget(key)  # deleted and made again: a new object
                    current = None
                if current is None:
                    self._start(key, make(self, body))
                else:
                    current.body = body
        for key in set(self._workloads) - seen:
            await self._forget(key)

    def _start(self, key: tuple[str, str, str], workload: Workload) -> None:
        self.note(f"{workload}: seen")
        self._workloads[key] = workload
        task = asyncio.create_task(workload.run())
        task.add_done_callback(self._failed)
        self._tasks.append(task)

    async def _forget(self, key: tuple[str, str, str]) -> None:
        """The object is gone: its pods stop (in the background: a grace period can be long)."""
        workload = self._workloads.pop(key)
        workload.deleted = True
        self.note(f"{workload}: gone")

    def _failed(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()
            self.note(f"failed: {self.failure!r}")
