"""The learner: a Kubeflow PyTorchJob (`kubeflow.org/v1`) whose pods run `rlkd train`.

Built with kubeflow-training's model classes and serialised by the Kubernetes client, imported
inside the builder: they are the only Kubernetes libraries `rlkd render` loads (never kopf).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from rlkd.k8s.config import DEEPSPEED_KEY, MOUNT_DIR
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.inference import inference_roles
from rlkd.k8s.naming import child_metadata, labels, learner_name, service_url
from rlkd.k8s.pods import (
    SHM_MOUNT,
    SHM_VOLUME,
    env,
    job_file_env,
    job_volumes,
    resources,
    scheduling,
    store_env,
)
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import DEEPSPEED_FILE_ENV, endpoint_env

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
    """The environment contract of `rlkd train` (rlkd.spec.runtime): files, store, servers."""
    variables = [
        job_file_env(),
        env(DEEPSPEED_FILE_ENV, f"{MOUNT_DIR}/{DEEPSPEED_KEY}"),
        *store_env(job),
    ]
    variables += [
        env(endpoint_env(role), service_url(job, role)) for role in inference_roles(job.spec)
    ]
    return variables


def _pod_template(job: RLKDJob, defaults: OperatorDefaults) -> dict[str, Any]:
    learner = job.spec.learner
    mounts, volumes = job_volumes(job)
    mounts, volumes = [SHM_MOUNT, *mounts], [SHM_VOLUME, *volumes]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": learner.image or defaults.trainer_image,
        "command": ["rlkd", "train"],
        "env": learner_env(job),
        "volumeMounts": mounts,
    }
    if learner.tracking_secret:
        # The tracker's keys (WANDB_API_KEY, MLFLOW_TRACKING_TOKEN, ...) as environment, straight
        # from the Secret: never in the manifest, the ConfigMap or the args.
        container["envFrom"] = [{"secretRef": {"name": learner.tracking_secret}}]
    if amounts := resources(learner, learner.gpus_per_replica):
        container["resources"] = amounts
    return {
        "metadata": {"labels": labels(job, "learner")},
        "spec": {
            "enableServiceLinks": False,
            "containers": [container],
            "volumes": volumes,
            **scheduling(learner),
        },
    }


def build_pytorchjob(job: RLKDJob, defaults: OperatorDefaults) -> dict[str, Any]:
    """The PyTorchJob of a resolved job: one Master, `replicas - 1` Workers, one process per GPU
    (one per pod on CPU), suspended while the spec says so."""
    from kubeflow.training.models import (
        KubeflowOrgV1PyTorchJob,
        KubeflowOrgV1PyTorchJobSpec,
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
    )
    from kubernetes.client import ApiClient

    learner = job.spec.learner
    template = _pod_template(job, defaults)
    replicas = {"Master": 1, "Worker": learner.replicas - 1}
    pytorchjob = KubeflowOrgV1PyTorchJob(
        api_version=API_VERSION,
        kind=KIND,
        metadata=child_metadata(job, learner_name(job), "learner"),
        spec=KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(max(learner.gpus_per_replica, 1)),
            pytorch_replica_specs={
                kind: KubeflowOrgV1ReplicaSpec(
                    replicas=count, restart_policy=RESTART_POLICY, template=template
                )
                for kind, count in replicas.items()
                if count > 0
            },
            run_policy=KubeflowOrgV1RunPolicy(
                backoff_limit=learner.backoff_limit,
                clean_pod_policy=CLEAN_POD_POLICY,
                suspend=job.spec.suspend,
            ),
        ),
    )
    manifest: dict[str, Any] = ApiClient().sanitize_for_serialization(pytorchjob)
    return manifest
