"""A pod's container as a local process: its environment resolved from the Secrets and ConfigMaps
it names, its volumes laid out as directories, and the only rewrites that put it on loopback:
a server's --host/--port, the host:port of RLKD_<ROLE>_URL, and mount paths.

Pure functions over manifests and already fetched data (`Refs`); the runner does the I/O.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rlkd.spec.runtime import (
    INFERENCE_ROLES,
    STORE_SECRET_DIR,
    STORE_SECRET_DIR_ENV,
    endpoint_env,
)
from tests.podrunner.errors import NotYet, PodError

HOST = "127.0.0.1"
Ref = tuple[str, str]
"""("Secret" or "ConfigMap", name) in the pod's namespace."""
Refs = Mapping[Ref, Mapping[str, str]]
"""What each referenced object holds, decoded (a Secret's values un-base64'd)."""

URL_VARIABLES = frozenset(endpoint_env(role) for role in INFERENCE_ROLES)
"""The variables holding a Service's in-cluster URL (rlkd.spec.runtime)."""
SERVICE_URL = re.compile(
    r"^(?P<scheme>https?)://(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc"
    r"(?:\.cluster\.local)?:(?P<port>\d+)(?P<rest>/.*)?$"
)
FIXED_PATHS = {STORE_SECRET_DIR: STORE_SECRET_DIR_ENV}
"""Mount paths the code reads by a constant, not a variable: the variable that moves each."""


def the_container(template: Mapping[str, Any]) -> dict[str, Any]:
    """The one container of a pod template (the runner plays no sidecars, no init containers)."""
    containers = template["spec"]["containers"]
    if len(containers) != 1 or template["spec"].get("initContainers"):
        raise PodError("the runner plays pods of one container and no init containers")
    container: dict[str, Any] = containers[0]
    return container


def decoded(kind: str, body: Mapping[str, Any]) -> dict[str, str]:
    """The data of a Secret (base64 in `data`) or a ConfigMap, as text."""
    data = body.get("data") or {}
    if kind == "Secret":
        return {key: base64.b64decode(value).decode() for key, value in data.items()}
    return dict(data)


def references(pod_spec: Mapping[str, Any]) -> set[Ref]:
    """Every Secret and ConfigMap the pod's containers and volumes name."""
    out: set[Ref] = set()
    for container in pod_spec.get("containers", []):
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                out.add(("Secret", source["secretRef"]["name"]))
            if "configMapRef" in source:
                out.add(("ConfigMap", source["configMapRef"]["name"]))
        for var in container.get("env", []):
            value_from = var.get("valueFrom") or {}
            if "secretKeyRef" in value_from:
                out.add(("Secret", value_from["secretKeyRef"]["name"]))
            if "configMapKeyRef" in value_from:
                out.add(("ConfigMap", value_from["configMapKeyRef"]["name"]))
    for volume in pod_spec.get("volumes", []):
        if "secret" in volume:
            out.add(("Secret", volume["secret"]["secretName"]))
        if "configMap" in volume:
            out.add(("ConfigMap", volume["configMap"]["name"]))
    return out


def _held(refs: Refs, ref: Ref, what: str) -> Mapping[str, str]:
    if ref not in refs:
        raise NotYet(f"{ref[0]} {ref[1]} ({what}) does not exist yet")
    return refs[ref]


def container_env(container: Mapping[str, Any], refs: Refs) -> dict[str, str]:
    """The container's variables as the kubelet sets them: envFrom first, env after (the later
    of two with one name wins); a reference to a missing object or key is NotYet."""
    out: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, key = (
            ("Secret", "secretRef") if "secretRef" in source else ("ConfigMap", "configMapRef")
        )
        data = _held(refs, (kind, source[key]["name"]), "envFrom")
        out.update({source.get("prefix", "") + k: v for k, v in data.items()})
    for var in container.get("env", []):
        value_from = var.get("valueFrom")
        if value_from is None:
            out[var["name"]] = var.get("value", "")
            continue
        for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if field in value_from:
                ref = value_from[field]
                data = _held(refs, (kind, ref["name"]), var["name"])
                if ref["key"] in data:
                    out[var["name"]] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise NotYet(f"{kind} {ref['name']} has no key {ref['key']!r} ({var['name']})")
                break
        else:
            raise PodError(f"env {var['name']}: valueFrom {sorted(value_from)} is not played here")
    return out


def lay_out_volumes(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any], refs: Refs, root: Path
) -> dict[str, Path]:
    """Write the container's volumes under `root` (a ConfigMap's or Secret's keys as files, an
    emptyDir empty); mountPath -> the local directory standing in for it."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        local = root / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume or "secret" in volume:
            kind, ref = (
                ("Secret", volume["secret"]["secretName"])
                if "secret" in volume
                else ("ConfigMap", volume["configMap"]["name"])
            )
            for key, value in _held(refs, (kind, ref), f"volume {mount['name']}").items():
                (local / key).write_text(value)
        elif "emptyDir" not in volume:
            raise PodError(f"volume {mount['name']}: {sorted(set(volume) - {'name'})} not played")
        mounts[mount["mountPath"]] = local
    return mounts


def under_mounts(value: str, mounts: Mapping[str, Path]) -> str:
    """`value` with a path inside a mount moved to that mount's local directory."""
    for path, local in mounts.items():
        if value == path or value.startswith(path.rstrip("/") + "/"):
            return str(local) + value[len(path.rstrip("/")) :]
    return value


def fixed_path_overrides(mounts: Mapping[str, Path]) -> dict[str, str]:
    """The variables that move what the code reads at a fixed path (FIXED_PATHS)."""
    return {var: str(mounts[path]) for path, var in FIXED_PATHS.items() if path in mounts}


def on_loopback(env: Mapping[str, str], address: Callable[[str, str], int]) -> dict[str, str]:
    """`env` with each RLKD_<ROLE>_URL's host:port moved to the local port that `address`
    (namespace, Service) gives; the scheme and path stay."""
    out = dict(env)
    for name in URL_VARIABLES & set(env):
        url = SERVICE_URL.match(env[name])
        if url is None:
            continue  # not a Service inside the cluster (an external server): as it is
        port = address(url["namespace"], url["service"])
        out[name] = f"{url['scheme']}://{HOST}:{port}{url['rest'] or ''}"
    return out


def server_flags(argv: list[str], port: int) -> list[str]:
    """A server's command line listening on HOST:`port` (--host and --port rewritten)."""
    out = list(argv)
    for flag, value in (("--host", HOST), ("--port", str(port))):
        for i, word in enumerate(out):
            if word == flag and i + 1 < len(out):
                out[i + 1] = value
            elif word.startswith(f"{flag}="):
                out[i] = f"{flag}={value}"
    return out


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    """The container port a probe names (by number or by name)."""
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return int(declared["containerPort"])
    if isinstance(port, int):
        return port
    raise PodError(f"container {container['name']} declares no port named {port!r}")


def probe_path(container: Mapping[str, Any]) -> str | None:
    """The readiness probe's HTTP path (the kubelet's readiness), None without one."""
    probe = container.get("readinessProbe") or {}
    if not probe:
        return None
    if "httpGet" not in probe:
        raise PodError(f"container {container['name']}: only httpGet readiness probes are played")
    return str(probe["httpGet"].get("path", "/"))


def pytorchjob_env(
    pytorchjob: Mapping[str, Any], replica_type: str, index: int, master_port: int
) -> dict[str, str]:
    """What the Kubeflow Training Operator (v1.9) appends to a PyTorchJob replica's container env
    (pkg/controller.v1/pytorch/envvar.go setPodEnv, master.go): the master's address and port
    (`<job>-master-0`:its `pytorchjob-port` there; HOST:`master_port` here), the world size
    (replicas x nprocPerNode), the replica's rank (workers count from 1), and torchrun's PET_*."""
    spec = pytorchjob["spec"]
    replicas = sum(r.get("replicas", 1) for r in spec["pytorchReplicaSpecs"].values())
    nproc = str(spec.get("nprocPerNode") or "1")
    per_node = int(nproc) if nproc.isdigit() else 1
    rank = index + 1 if replica_type == "Worker" else index
    out = {"PYTHONUNBUFFERED": "0"}
    if "Master" in spec["pytorchReplicaSpecs"]:
        out |= {
            "MASTER_PORT": str(master_port),
            "PET_MASTER_PORT": str(master_port),
            "MASTER_ADDR": HOST,
            "PET_MASTER_ADDR": HOST,
            "WORLD_SIZE": str(replicas * per_node),
            "RANK": str(rank),
            "PET_NPROC_PER_NODE": nproc,
            "PET_NODE_RANK": str(rank),
        }
    if spec.get("elasticPolicy") is not None:
        raise PodError("PyTorchJob spec.elasticPolicy is not played by the runner")
    out["PET_NNODES"] = str(replicas)
    return out
