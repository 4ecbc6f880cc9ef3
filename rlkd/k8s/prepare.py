"""The prepare Job: a `batch/v1` Job named `<job>-prepare` whose pod runs `rlkd prepare` (teacher
paths sampled, teacher decompositions cached) before the learner exists, so the learner's GPUs
are not held while the teacher side is computed.

It reads the same environment contract as the learner (rlkd.spec.runtime) and is built from the
same pod pieces (rlkd.k8s.pods). CPU-only when every role it calls is a server; a role it loads
in-process (backend transformers) runs on the learner's GPUs and placement, as it would in the
learner.
"""

from __future__ import annotations

from typing import Any

from rlkd.k8s.contract import job_file_env, job_volumes, store_env
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.inference import inference_roles
from rlkd.k8s.naming import child_metadata, labels, prepare_name, service_url
from rlkd.k8s.pods import SHM_MOUNT, SHM_VOLUME, env, pod_pieces, resources, scheduling
from rlkd.spec.job import InferenceSpec, RLKDJobSpec
from rlkd.spec.progress import needs_decompositions, needs_prepare
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import InferenceRole, endpoint_env

API_VERSION = "batch/v1"
KIND = "Job"
CONTAINER_NAME = "prepare"
BACKOFF_LIMIT = 2
"""Pods tried after the first fails: a retry samples and decomposes only what failed (the rest
is cached), and a GSRM that cannot serve fails the RLKDJob before any learner GPU is held."""


def prepare_specs(spec: RLKDJobSpec) -> dict[InferenceRole, InferenceSpec]:
    """The models `rlkd prepare` calls: the teacher (source model) and the GSRM (when the
    teacher's paths are decomposed); none when the job needs no preparing."""
    out: dict[InferenceRole, InferenceSpec] = {}
    if not needs_prepare(spec):
        return out
    if spec.teacher.source == "model" and spec.teacher.model is not None:
        out["teacher"] = spec.teacher.model
    if needs_decompositions(spec) and spec.gsrm is not None:
        out["gsrm"] = spec.gsrm
    return out


def prepare_servers(spec: RLKDJobSpec) -> list[InferenceRole]:
    """The roles whose vLLM servers the prepare Job calls (it starts once they are available)."""
    return [role for role in inference_roles(spec) if role in prepare_specs(spec)]


def learner_servers(spec: RLKDJobSpec) -> list[InferenceRole]:
    """The roles whose servers the learner calls: every one but the teacher, whose paths the
    prepare Job has cached before the learner starts."""
    return [role for role in inference_roles(spec) if role != "teacher"]


def prepare_gpus(spec: RLKDJobSpec) -> int:
    """GPUs of the prepare pod: the learner's when it loads a model in-process (transformers),
    else none."""
    in_process = any(s.backend == "transformers" for s in prepare_specs(spec).values())
    return spec.learner.gpus_per_replica if in_process else 0


def build_prepare_job(job: RLKDJob, defaults: OperatorDefaults) -> dict[str, Any]:
    """The prepare Job of a resolved job that needs preparing (rlkd.spec.progress.needs_prepare)."""
    spec = job.spec
    learner = spec.learner
    gpus = prepare_gpus(spec)
    pieces = pod_pieces(job, labels(job, "prepare"))
    mounts, volumes = job_volumes(job)
    if gpus:  # an in-process model on GPUs shares tensors through /dev/shm, as in the learner
        mounts, volumes = [SHM_MOUNT, *mounts], [SHM_VOLUME, *volumes]
    mounts, volumes = [*mounts, *pieces.mounts], [*volumes, *pieces.volumes]
    variables = [job_file_env(), *store_env(job)] + [
        env(endpoint_env(role), service_url(job, role)) for role in prepare_servers(spec)
    ]
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": learner.image or defaults.trainer_image,
        "command": ["rlkd", "prepare"],
        "env": variables + pieces.env,
        "volumeMounts": mounts,
        **pieces.container,
    }
    if gpus and (amounts := resources(learner, gpus)):
        container["resources"] = amounts
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": child_metadata(job, prepare_name(job), "prepare"),
        "spec": {
            "backoffLimit": BACKOFF_LIMIT,
            "suspend": spec.suspend,
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
