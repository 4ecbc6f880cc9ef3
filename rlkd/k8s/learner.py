"""The learner: a Kubeflow PyTorchJob (`kubeflow.org/v1`) whose pods run `rlkd train`; a GSRM
build's PyTorchJob (rlkd.k8s.gsrm_build) is made by the same parts, on the same placement.

Built with kubeflow-training's model classes and serialised by the Kubernetes client, imported
inside the builder: they are the only Kubernetes libraries `rlkd render` loads (never kopf).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from rlkd.k8s.config import DEEPSPEED_KEY, MOUNT_DIR
from rlkd.k8s.contract import job_file_env, job_volumes, store_env
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.kueue import queue_labels, queue_name
from rlkd.k8s.naming import (
    Component,
    child_metadata,
    labels,
    learner_name,
    server_root,
    service_url,
)
from rlkd.k8s.pods import (
    SHM_MOUNT,
    SHM_VOLUME,
    PodPieces,
    env,
    pod_pieces,
    resources,
    scheduling,
)
from rlkd.k8s.prepare import learner_servers
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import DEEPSPEED_FILE_ENV, InferenceRole, endpoint_env

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"
"""The training operator finds the training container by this name (its ports and env)."""
RESTART_POLICY = "OnFailure"
"""A failed container restarts in its pod, and the Training Operator counts those restarts
against runPolicy.backoffLimit; training resumes from the last checkpoint. Not ExitCode: with
it the operator re-creates pods whose restart count stays 0, so backoffLimit never ends a
learner that keeps being OOM-killed (kubeflow/trainer#2045)."""
CLEAN_POD_POLICY = "Running"
"""When the job ends, delete pods still running (freeing their GPUs); keep finished pods' logs."""


WAIT_CONTAINER = "wait-for-inference"
"""The init container of a queued learner: Kueue starts the learner's pods as soon as it admits
the job, and the inference servers only start then, so the pods wait for them here."""
_WAIT_SCRIPT = """\
import sys, time, urllib.request
for url in sys.argv[1:]:
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            print("available:", url, flush=True)
            break
        except Exception as exc:
            print("waiting for", url, "-", exc, flush=True)
            time.sleep(10)
"""


class PyTorchJobCondition(StrEnum):
    """The condition types the Training Operator sets on a PyTorchJob (Kubeflow's
    JobConditionType), named once for the operator that reads them and the tests that play it."""

    CREATED = "Created"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


def learner_env(job: RLKDJob) -> list[dict[str, Any]]:
    """The environment contract of `rlkd train` (rlkd.spec.runtime): files, store, the servers
    it calls (not the teacher's: its paths are cached before the learner starts)."""
    return pytorch_env(job, learner_servers(job.spec))


def pytorch_env(job: RLKDJob, roles: list[InferenceRole]) -> list[dict[str, Any]]:
    """What a PyTorchJob's `rlkd` command reads (rlkd.spec.runtime): the resolved job, its
    DeepSpeed config, the store, and the base URL of each of `roles`' servers."""
    variables = [
        job_file_env(),
        env(DEEPSPEED_FILE_ENV, f"{MOUNT_DIR}/{DEEPSPEED_KEY}"),
        *store_env(job),
    ]
    return variables + [env(endpoint_env(role), service_url(job, role)) for role in roles]


def _servers_called(job: RLKDJob) -> list[str]:
    """The health URL of every server the learner calls."""
    return [f"{server_root(job, role)}/health" for role in learner_servers(job.spec)]


def _wait_container(image: str, urls: list[str], pieces: PodPieces) -> dict[str, Any]:
    """WAIT_CONTAINER: Python from the trainer image, no other dependency; the pod settings'
    env and securityContext like the learner's own container."""
    return {
        "name": WAIT_CONTAINER,
        "image": image,
        "command": ["python", "-c", _WAIT_SCRIPT, *urls],
        **({"env": pieces.env} if pieces.env else {}),
        **pieces.container,
    }


def pod_template(
    job: RLKDJob,
    defaults: OperatorDefaults,
    component: Component,
    command: list[str],
    variables: list[dict[str, Any]],
    wait_for: Sequence[str] = (),
) -> dict[str, Any]:
    """A pod template on the learner's placement (spec.learner: image, GPUs, resources,
    scheduling, tracker keys) whose container runs `command` with `variables`; with an init
    container that waits for the health URLs `wait_for` first."""
    learner = job.spec.learner
    pieces = pod_pieces(job, labels(job, component))
    mounts, volumes = job_volumes(job)
    mounts = [SHM_MOUNT, *mounts, *pieces.mounts]
    volumes = [SHM_VOLUME, *volumes, *pieces.volumes]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": learner.image or defaults.trainer_image,
        "command": command,
        "env": variables + pieces.env,
        "volumeMounts": mounts,
        **pieces.container,
    }
    if learner.tracking_secret:
        # The tracker's keys (WANDB_API_KEY, MLFLOW_TRACKING_TOKEN, ...) as environment, straight
        # from the Secret: never in the manifest, the ConfigMap or the args.
        container["envFrom"] = [{"secretRef": {"name": learner.tracking_secret}}]
    if amounts := resources(learner, learner.gpus_per_replica):
        container["resources"] = amounts
    return {
        "metadata": pieces.metadata,
        "spec": {
            "enableServiceLinks": False,
            **(
                {"initContainers": [_wait_container(container["image"], list(wait_for), pieces)]}
                if wait_for
                else {}
            ),
            "containers": [container],
            "volumes": volumes,
            **scheduling(learner),
            **pieces.pod,
        },
    }


def pytorchjob(
    job: RLKDJob,
    metadata: dict[str, Any],
    master: dict[str, Any],
    worker: dict[str, Any],
    *,
    suspend: bool,
) -> dict[str, Any]:
    """A PyTorchJob on the learner's placement: one Master (pod template `master`),
    `replicas - 1` Workers (`worker`), one process per GPU (one per pod on CPU), the learner's
    restart and backoff rules."""
    from kubeflow.training.models import (
        KubeflowOrgV1PyTorchJob,
        KubeflowOrgV1PyTorchJobSpec,
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
    )
    from kubernetes.client import ApiClient

    learner = job.spec.learner
    replicas = {"Master": (1, master), "Worker": (learner.replicas - 1, worker)}
    manifest = KubeflowOrgV1PyTorchJob(
        api_version=API_VERSION,
        kind=KIND,
        metadata=metadata,
        spec=KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(max(learner.gpus_per_replica, 1)),
            pytorch_replica_specs={
                kind: KubeflowOrgV1ReplicaSpec(
                    replicas=count, restart_policy=RESTART_POLICY, template=template
                )
                for kind, (count, template) in replicas.items()
                if count > 0
            },
            run_policy=KubeflowOrgV1RunPolicy(
                backoff_limit=learner.backoff_limit,
                clean_pod_policy=CLEAN_POD_POLICY,
                suspend=suspend,
            ),
        ),
    )
    out: dict[str, Any] = ApiClient().sanitize_for_serialization(manifest)
    return out


def build_pytorchjob(job: RLKDJob, defaults: OperatorDefaults) -> dict[str, Any]:
    """The learner's PyTorchJob of a resolved job: every pod runs `rlkd train`, suspended while
    the spec says so. A queued job (queueName) is created suspended in its LocalQueue, for Kueue
    to admit, and its pods wait for the servers they call (WAIT_CONTAINER)."""
    queued = queue_name(job) is not None
    servers = _servers_called(job) if queued else []
    template = pod_template(job, defaults, "learner", ["rlkd", "train"], learner_env(job), servers)
    metadata = child_metadata(job, learner_name(job), "learner")
    metadata["labels"].update(queue_labels(job))
    return pytorchjob(job, metadata, template, template, suspend=job.spec.suspend or queued)
