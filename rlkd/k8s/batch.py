"""A `batch/v1` Job whose one pod runs an `rlkd` command before the learner exists: the prepare
Job (rlkd.k8s.prepare) and a GSRM build's annotate Job (rlkd.k8s.annotate).

Both read the environment contract of the learner (rlkd.spec.runtime) and are built from the same
pod pieces (rlkd.k8s.pods). CPU-only unless the command loads a model in-process (backend
transformers): that pod then gets the learner's GPUs and placement, as it would in the learner.
"""

from __future__ import annotations

from typing import Any

from rlkd.k8s.contract import job_file_env, job_volumes, store_env
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.naming import Component, child_metadata, labels
from rlkd.k8s.pods import SHM_MOUNT, SHM_VOLUME, pod_pieces, resources, scheduling
from rlkd.spec.resource import RLKDJob

API_VERSION = "batch/v1"
KIND = "Job"
BACKOFF_LIMIT = 2
"""Pods tried after the first fails: the commands resume (a retry computes only what failed, the
rest is in the store), and a server that cannot serve fails the RLKDJob before any learner GPU
is held."""


def build_rlkd_job(
    job: RLKDJob,
    defaults: OperatorDefaults,
    *,
    name: str,
    component: Component,
    command: list[str],
    variables: list[dict[str, Any]],
    gpus: int,
) -> dict[str, Any]:
    """The Job `name` of a resolved job: one pod running `command` (container `component`) with
    the resolved job and the store mounted, `variables` before the pod settings' env, and `gpus`
    of the learner's (0: CPU, scheduled anywhere). Suspended while the spec says so."""
    learner = job.spec.learner
    pieces = pod_pieces(job, labels(job, component))
    mounts, volumes = job_volumes(job)
    if gpus:  # an in-process model on GPUs shares tensors through /dev/shm, as in the learner
        mounts, volumes = [SHM_MOUNT, *mounts], [SHM_VOLUME, *volumes]
    mounts, volumes = [*mounts, *pieces.mounts], [*volumes, *pieces.volumes]
    container: dict[str, Any] = {
        "name": component,
        "image": learner.image or defaults.trainer_image,
        "command": command,
        "env": [job_file_env(), *store_env(job), *variables, *pieces.env],
        "volumeMounts": mounts,
        **pieces.container,
    }
    if gpus and (amounts := resources(learner, gpus)):
        container["resources"] = amounts
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": child_metadata(job, name, component),
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "suspend": job.spec.suspend,
            "template": {
                "metadata": pieces.metadata,
                "spec": {
                    "restartPolicy": "Never",
                    "enableServiceLinks": False,
                    "containers": [container],
                    "volumes": volumes,
                    **(scheduling(learner) if gpus else {}),
                    **pieces.pod,
                },
            },
        },
    }
