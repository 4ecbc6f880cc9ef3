"""Pod pieces every child shares: resources, scheduling, shared memory, S3 credentials."""

from __future__ import annotations

from typing import Any

from rlkd.k8s.config import JOB_KEY, MOUNT_DIR
from rlkd.k8s.naming import config_name
from rlkd.k8s.resolve import storage_of
from rlkd.spec.job import Placement, StorageSpec
from rlkd.spec.progress import run_prefix
from rlkd.spec.resource import RLKDJob, namespace_of
from rlkd.spec.runtime import (
    JOB_FILE_ENV,
    STORE_BUCKET_ENV,
    STORE_ENDPOINT_ENV,
    STORE_PREFIX_ENV,
    STORE_REGION_ENV,
    STORE_SECRET_DIR,
)
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR

GPU_RESOURCE = "nvidia.com/gpu"
SHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
"""/dev/shm in memory: PyTorch and NCCL share tensors between processes through it, and the
container runtime's default (64 MiB) is far too small."""
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}


def resources(placement: Placement, gpus: int) -> dict[str, Any]:
    """Requests equal to limits (Guaranteed QoS when CPU and memory are set); GPUs only when
    asked for, so a CPU run schedules on any node."""
    amounts: dict[str, Any] = placement.resources.to_dict()
    if gpus:
        amounts[GPU_RESOURCE] = gpus
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


def job_file_env() -> dict[str, str]:
    """Where `rlkd train` and `rlkd prepare` find the resolved job (the mounted ConfigMap)."""
    return env(JOB_FILE_ENV, f"{MOUNT_DIR}/{JOB_KEY}")


def store_env(job: RLKDJob) -> list[dict[str, str]]:
    """The store of a resolved job as the pods running `rlkd` read it (rlkd.spec.runtime): the
    endpoint, the bucket and the run's own prefix, the region when set."""
    storage = storage_of(job)
    variables = [
        env(STORE_ENDPOINT_ENV, storage.endpoint),
        env(STORE_BUCKET_ENV, storage.bucket),
        env(STORE_PREFIX_ENV, run_prefix(storage.prefix, namespace_of(job), job.metadata.name)),
    ]
    if storage.region:
        variables.append(env(STORE_REGION_ENV, storage.region))
    return variables


def job_volumes(job: RLKDJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes) of a pod running `rlkd`: the ConfigMap at /etc/rlkd, and the
    storage Secret at STORE_SECRET_DIR when the store names one (files, never env values)."""
    storage = storage_of(job)
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": MOUNT_DIR, "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": config_name(job)}}]
    if storage.credentials_secret:
        mounts.append(
            {"name": "store-credentials", "mountPath": STORE_SECRET_DIR, "readOnly": True}
        )
        volumes.append(
            {"name": "store-credentials", "secret": {"secretName": storage.credentials_secret}}
        )
    return mounts, volumes
