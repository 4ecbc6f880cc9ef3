"""Pod pieces every child shares: resources, scheduling, shared memory, S3 credentials."""

from __future__ import annotations

from typing import Any

from rlkd.k8s.quantity import canonical
from rlkd.spec.job import Placement, StorageSpec
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR

GPU_RESOURCE = "nvidia.com/gpu"
SHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
"""/dev/shm in memory: PyTorch and NCCL share tensors between processes through it, and the
container runtime's default (64 MiB) is far too small."""
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def resources(placement: Placement, gpus: int) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS when CPU and memory are set); GPUs only when
    asked for, so a CPU run schedules on any node. Quantities in the API server's canonical
    form (`"1"`, not `1`), so the live copy reads back as built."""
    amounts: dict[str, Any] = placement.resources.to_dict()
    if gpus:
        amounts[GPU_RESOURCE] = gpus
    amounts = {name: canonical(amount) for name, amount in amounts.items()}
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def scheduling(placement: Placement) -> dict[str, Any]:
    """The pod spec's nodeSelector and tolerations, when the spec sets them."""
    out: dict[str, Any] = {}
    if placement.node_selector:
        out["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        out["tolerations"] = [t.to_dict() for t in placement.tolerations]
    return out


def env(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": value}


def s3_env(storage: StorageSpec) -> list[dict[str, Any]]:
    """What the AWS SDK in a server needs to read the store: the endpoint (S3-compatible stores
    use path-style addressing) and the key pair by reference to the storage Secret, so no secret
    value is ever written into a manifest."""
    out: list[dict[str, Any]] = [
        env("AWS_ENDPOINT_URL", storage.endpoint),
        env("RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING", "0"),
    ]
    if storage.region:
        out += [env("AWS_REGION", storage.region), env("AWS_DEFAULT_REGION", storage.region)]
    if storage.credentials_secret:
        out += [
            {
                "name": var,
                "valueFrom": {"secretKeyRef": {"name": storage.credentials_secret, "key": var}},
            }
            for var in (ACCESS_KEY_VAR, SECRET_KEY_VAR)
        ]
        # The keys are given: skip the SDK's slow probe of the cloud instance metadata service.
        out.append(env("AWS_EC2_METADATA_DISABLED", "true"))
    return out
