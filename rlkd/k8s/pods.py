"""Pod pieces every child shares: resources, scheduling, shared memory, S3 credentials, and the
job's pod settings (identity, pull Secrets, metadata, env, security, the Hugging Face cache)."""

from __future__ import annotations

from typing import Any, NamedTuple

from rlkd.errors import SpecError
from rlkd.k8s.quantity import canonical
from rlkd.spec.job import HubSpec, Placement, PodSettings, StorageSpec
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import ACCESS_KEY_VAR, HF_TOKEN_VAR, SECRET_KEY_VAR

GPU_RESOURCE = "nvidia.com/gpu"
SHM_VOLUME = {"name": "dshm", "emptyDir": {"medium": "Memory"}}
"""/dev/shm in memory: PyTorch and NCCL share tensors between processes through it, and the
container runtime's default (64 MiB) is far too small."""
SHM_MOUNT = {"name": "dshm", "mountPath": "/dev/shm"}

RUN_AS_USER = 1000
"""The user (and group) of every container under `pods.security: restricted`. Upstream images
(vllm/vllm-openai) run as root; `runAsNonRoot` alone would refuse to start them."""
HOME_DIR = "/home/rlkd"
"""HOME of a restricted pod, an emptyDir: user 1000 has no home in the image, and vLLM, torch
compile, Triton and DeepSpeed write their caches under it."""
HF_HOME_DIR = "/var/cache/huggingface"
"""Where the hub cache claim is mounted (HF_HOME): models and datasets downloaded once."""
RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS_USER,
    "runAsGroup": RUN_AS_USER,
    "fsGroup": RUN_AS_USER,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
"""The pod securityContext of the `restricted` Pod Security Standard. fsGroup makes the cache
claim writable to the user (on volumes that support it); OnRootMismatch spares a cache of many
GB a recursive chown on every pod start."""
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
"""Its container half. NCCL needs no capability over TCP, NVLink or shared memory; RDMA needs
IPC_LOCK, which `restricted` forbids (`pods.security: none`)."""


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


class PodPieces(NamedTuple):
    """What the job's pod settings and hub cache add to one pod: merge `pod` into the pod spec,
    `container` into each container, append `volumes`, `mounts` and `env` (after the builder's
    own variables)."""

    metadata: dict[str, Any]
    pod: dict[str, Any]
    container: dict[str, Any]
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    env: list[dict[str, Any]]


def pod_settings(job: RLKDJob) -> PodSettings:
    """The pod settings of a resolved job."""
    if job.spec.pods is None or job.spec.pods.security is None:
        raise SpecError(
            ["spec.pods: is unresolved: build children from resolve_job(job, defaults)"]
        )
    return job.spec.pods


def pod_pieces(job: RLKDJob, own_labels: dict[str, str]) -> PodPieces:
    """The pieces of every child pod of a resolved job; `own_labels` are the builder's labels
    (they win over the job's extra labels, which rlkd.k8s.resolve keeps off them anyway)."""
    settings = pod_settings(job)
    metadata: dict[str, Any] = {"labels": {**settings.labels, **own_labels}}
    if settings.annotations:
        metadata["annotations"] = dict(settings.annotations)
    pod: dict[str, Any] = {}
    if settings.service_account_name:
        pod["serviceAccountName"] = settings.service_account_name
    if settings.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in settings.image_pull_secrets]
    container: dict[str, Any] = {}
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    variables = hub_env(job.spec.hub)
    if job.spec.hub is not None and job.spec.hub.cache_claim:
        volumes.append(
            {"name": "hf-cache", "persistentVolumeClaim": {"claimName": job.spec.hub.cache_claim}}
        )
        mounts.append({"name": "hf-cache", "mountPath": HF_HOME_DIR})
    if settings.security == "restricted":
        pod["securityContext"] = RESTRICTED_POD
        container["securityContext"] = RESTRICTED_CONTAINER
        volumes.append({"name": "home", "emptyDir": {}})
        mounts.append({"name": "home", "mountPath": HOME_DIR})
        # USER too: Python's getpass (torch compile's cache) fails on a uid without a passwd entry.
        variables += [env("HOME", HOME_DIR), env("USER", "rlkd")]
    # An empty value is left out, as the API server stores it (`value` is omitempty): else the
    # child would never contain its manifest and be patched at every reconcile.
    variables += [env(e.name, e.value) if e.value else {"name": e.name} for e in settings.env]
    return PodPieces(metadata, pod, container, volumes, mounts, variables)


def hub_env(hub: HubSpec | None) -> list[dict[str, Any]]:
    """HF_HOME on the cache claim, HF_TOKEN from the token Secret (never its value)."""
    out: list[dict[str, Any]] = []
    if hub is not None and hub.cache_claim:
        out.append(env("HF_HOME", HF_HOME_DIR))
    if hub is not None and hub.token_secret:
        out.append(
            {
                "name": HF_TOKEN_VAR,
                "valueFrom": {"secretKeyRef": {"name": hub.token_secret, "key": HF_TOKEN_VAR}},
            }
        )
    return out
