"""What the runner does for each kind it plays: one Workload per live object, each in its own
task, so a server stopping (up to its grace period) holds up no other.

- Deployment: the pod runs while spec.replicas is 1 (restartPolicy Always: a container that exits
  is restarted), is probed as the kubelet probes readiness, and is replaced when the template
  changes (strategy Recreate); scaled to 0 it is stopped.
- Job (batch/v1, one pod): a failed pod is replaced by a new one (restartPolicy Never) or
  restarted in place (OnFailure) until the failures pass backoffLimit.
- PyTorchJob: one pod per replica (Master, Workers), each with the Training Operator's env;
  OnFailure containers restart in place, their restarts counted against runPolicy.backoffLimit;
  once the job has succeeded or failed, pods still running are stopped (cleanPodPolicy Running).
"""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from tests.podrunner.container import container_port, probe_path, pytorchjob_env, the_container
from tests.podrunner.errors import NotYet, PodError
from tests.podrunner.process import ContainerProcess
from tests.podrunner.status import (
    JobRun,
    ReplicaRun,
    deployment_status,
    job_exhausted,
    job_finished,
    job_status,
    now,
    pytorchjob_exhausted,
    pytorchjob_finished,
    pytorchjob_status,
)

if TYPE_CHECKING:
    from tests.podrunner.runner import PodRunner


@dataclass
class Pod:
    """One pod the runner plays: its name, its container's current process, restarts."""

    name: str
    process: ContainerProcess
    template: str = ""
    restarts: int = 0
    ready: bool = False
    probe_failures: int = 0
    next_probe: float = 0.0
    exit_codes: list[int] = field(default_factory=list)


class Workload:
    """One object (Deployment, Job, PyTorchJob) and the pods the runner runs for it."""

    kind = ""

    def __init__(self, runner: PodRunner, body: dict[str, Any]) -> None:
        self.runner = runner
        self.body = body
        self.status: dict[str, Any] = dict(body.get("status") or {})
        self.pods: dict[str, Pod] = {}
        self.deleted = False
        self.waiting = ""
        self.restarts = 0
        """Container restarts in its pods so far (those pods gone or not)."""

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def uid(self) -> str | None:
        return self.body["metadata"].get("uid")

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    async def run(self) -> None:
        """Step until the object is gone (or the runner closes), then stop every pod."""
        try:
            while not self.deleted:
                try:
                    await self.step()
                    self.waiting = ""
                except NotYet as exc:
                    if str(exc) != self.waiting:
                        self.runner.note(f"{self}: waiting: {exc}")
                    self.waiting = str(exc)
                await asyncio.sleep(self.runner.poll_seconds)
        finally:
            await self.stop_pods()

    async def step(self) -> None:
        raise NotImplementedError

    async def launch(self, pod: str, template: dict[str, Any], **kwargs: Any) -> Pod:
        process = await self.runner.launch(self, pod, template, **kwargs)
        return Pod(pod, process, template=json.dumps(template, sort_keys=True))

    async def restart(self, pod: Pod, template: dict[str, Any], **kwargs: Any) -> None:
        """Start the pod's container again (in the same pod: its volumes stay)."""
        pod.restarts += 1
        self.restarts += 1
        pod.ready = False
        pod.process = await self.runner.launch(
            self, pod.name, template, note=f"restart {pod.restarts}", fresh=False, **kwargs
        )

    async def stop_pod(self, pod: Pod) -> None:
        if pod.process.returncode is None:
            self.runner.note(f"{self}: stopping pod {pod.name} (pid {pod.process.pid})")
        grace = self.runner.grace_seconds
        code = await pod.process.stop(grace)
        self.runner.note(f"{self}: pod {pod.name} stopped (exit {code})")

    async def stop_pods(self) -> None:
        await asyncio.gather(*(self.stop_pod(p) for p in self.pods.values()))
        self.pods.clear()

    def exited(self, pod: Pod) -> int | None:
        """The container's exit code once it ended, recorded once."""
        code = pod.process.returncode
        if code is not None and len(pod.exit_codes) <= pod.restarts:
            pod.exit_codes.append(code)
            self.runner.note(f"{self}: pod {pod.name} exited with {code}")
        return code

    def signal(self, sig: signal.Signals) -> list[int]:
        """Send `sig` to every running pod's process group; their pids."""
        pids = []
        for pod in self.pods.values():
            if pod.process.returncode is None:
                pod.process.signal(sig)
                pids.append(pod.process.pid)
        return pids

    async def write_status(self, status: dict[str, Any]) -> None:
        if status == self.status:
            return
        await self.runner.api.patch_status(
            self.kind, self.namespace, self.name, self.status, status
        )
        self.status = status

    def current(self) -> dict[str, Any]:
        """The object with the status this workload last wrote (the list may lag behind)."""
        return {**self.body, "status": self.status}


class DeploymentWorkload(Workload):
    kind = "Deployment"

    async def step(self) -> None:
        spec = self.body["spec"]
        desired = spec.get("replicas", 1)
        if desired > 1:
            raise PodError(
                f"{self}: replicas {desired}: the runner runs at most one per Deployment"
            )
        template = spec["template"]
        key = json.dumps(template, sort_keys=True)
        pod = self.pods.get("0")
        if pod is not None and (desired == 0 or pod.template != key):
            await self.stop_pod(pod)  # scaled to 0, or a new template (Recreate)
            del self.pods["0"]
            pod = None
        port = self.runner.port_of(self.namespace, self.name)
        if desired == 1 and pod is None:
            pod = self.pods["0"] = await self.launch(f"{self.name}-0", template, port=port)
        elif pod is not None and self.exited(pod) is not None:
            await self.restart(pod, template, port=port)  # restartPolicy Always
        if pod is not None:
            await self.probe(pod, the_container(template), port)
        ready = int(pod is not None and pod.ready)
        await self.write_status(deployment_status(self.current(), len(self.pods), ready, now()))

    async def probe(self, pod: Pod, container: dict[str, Any], port: int) -> None:
        """The readiness probe, at most every probe_seconds, against the pod's local port."""
        loop = asyncio.get_running_loop()
        if loop.time() < pod.next_probe or pod.process.returncode is not None:
            return
        probe = container.get("readinessProbe") or {}
        path = probe_path(container)
        if path is None:
            pod.ready = True
            return
        container_port(container, probe["httpGet"]["port"])  # the port the server listens on
        pod.next_probe = loop.time() + self.runner.probe_seconds
        timeout = aiohttp.ClientTimeout(total=probe.get("timeoutSeconds", 1))
        try:
            async with self.runner.http.get(
                f"http://127.0.0.1:{port}{path}", timeout=timeout
            ) as reply:
                passed = 200 <= reply.status < 400
        except (aiohttp.ClientError, TimeoutError):
            passed = False
        if passed:
            if not pod.ready:
                self.runner.note(f"{self}: pod {pod.name} ready ({path} answers)")
            pod.ready, pod.probe_failures = True, 0
        else:
            pod.probe_failures += 1
            if pod.probe_failures >= probe.get("failureThreshold", 3):
                pod.ready = False


class JobWorkload(Workload):
    kind = "Job"

    def __init__(self, runner: PodRunner, body: dict[str, Any]) -> None:
        super().__init__(runner, body)
        self.failed = 0
        self.attempt = 0
        self.started: str | None = None
        self.succeeded = False

    async def step(self) -> None:
        spec = self.body["spec"]
        if spec.get("completions", 1) != 1 or spec.get("parallelism", 1) != 1:
            raise PodError(f"{self}: the runner plays Jobs of one completion, one pod at a time")
        template = spec["template"]
        policy = template["spec"].get("restartPolicy", "Never")
        pod = self.pods.get("pod")
        if job_finished(self.current()) or spec.get("suspend"):
            await self.stop_pods()
        elif pod is None:
            self.started = self.started or now()
            pod = self.pods["pod"] = await self.launch(f"{self.name}-{self.attempt}", template)
        elif (code := self.exited(pod)) is not None:
            if code == 0:
                self.succeeded = True
                del self.pods["pod"]
            elif policy == "OnFailure":
                self.failed += 1  # a restart counts against backoffLimit as a failed pod does
                if not job_exhausted(self.body, self.failed):
                    await self.restart(pod, template)
            else:
                self.failed += 1
                self.attempt += 1
                del self.pods["pod"]
                if not job_exhausted(self.body, self.failed):
                    self.pods["pod"] = await self.launch(f"{self.name}-{self.attempt}", template)
        active = any(p.process.returncode is None for p in self.pods.values())
        run = JobRun(active=active, ready=active, failed=self.failed, succeeded=self.succeeded)
        await self.write_status(job_status(self.current(), run, self.started, now()))
        if job_finished(self.current()):
            await self.stop_pods()


class PyTorchJobWorkload(Workload):
    kind = "PyTorchJob"

    def __init__(self, runner: PodRunner, body: dict[str, Any]) -> None:
        super().__init__(runner, body)
        self.succeeded: set[str] = set()
        self.failed: set[str] = set()

    def replicas(self) -> list[tuple[str, int]]:
        specs = self.body["spec"]["pytorchReplicaSpecs"]
        return [(rtype, i) for rtype in specs for i in range(specs[rtype].get("replicas", 1))]

    async def step(self) -> None:
        specs = self.body["spec"]["pytorchReplicaSpecs"]
        suspended = (self.body["spec"].get("runPolicy") or {}).get("suspend")
        if pytorchjob_finished(self.current()) or suspended:
            await self.stop_pods()
        else:
            await self.start_or_restart(specs)
        runs = {}
        for rtype in specs:
            pods = [p for key, p in self.pods.items() if key.startswith(f"{rtype}-")]
            runs[rtype] = ReplicaRun(
                active=sum(p.process.returncode is None for p in pods),
                succeeded=sum(k.startswith(f"{rtype}-") for k in self.succeeded),
                failed=sum(k.startswith(f"{rtype}-") for k in self.failed),
            )
        restarts = sum(p.restarts for p in self.pods.values())
        await self.write_status(pytorchjob_status(self.current(), runs, restarts, now()))
        if pytorchjob_finished(self.current()):
            await self.stop_pods()  # cleanPodPolicy Running: pods still running go

    async def start_or_restart(self, specs: dict[str, Any]) -> None:
        master_port = self.runner.port_of(self.namespace, f"{self.name}-master-0")
        for rtype, index in self.replicas():
            key = f"{rtype}-{index}"
            template = specs[rtype]["template"]
            extra = pytorchjob_env(self.body, rtype, index, master_port)
            pod = self.pods.get(key)
            if key in self.succeeded or key in self.failed:
                continue
            if pod is None:
                name = f"{self.name}-{rtype.lower()}-{index}"
                self.pods[key] = await self.launch(name, template, extra_env=extra)
                continue
            code = self.exited(pod)
            if code is None:
                continue
            policy = specs[rtype].get("restartPolicy", "OnFailure")
            if code == 0:
                self.succeeded.add(key)
            elif policy == "Never":
                self.failed.add(key)
            elif policy == "OnFailure":
                restarts = sum(p.restarts for p in self.pods.values()) + 1
                if pytorchjob_exhausted(self.body, restarts):
                    pod.restarts += 1  # counted; the job fails before it runs again
                else:
                    await self.restart(pod, template, extra_env=extra)
            else:
                raise PodError(f"{self}: restartPolicy {policy} is not played by the runner")
