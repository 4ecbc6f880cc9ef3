"""The vLLM servers: one Deployment and one Service per inference role the spec needs.

Every role runs the upstream vLLM OpenAI server (`vllm serve`). The rollout server is the same
server with the flags TRL's `trl vllm-serve` adds (TRL 1.16 deprecated that command: it only
execs `vllm serve` with them): the NCCL weight-transfer engine the learner pushes new weights
through, and logprobs as TRL reads them. So one builder serves every role.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from rlkd.errors import SpecError
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.naming import child_metadata, inference_name, labels, selector_labels
from rlkd.k8s.pods import (
    SHM_MOUNT,
    SHM_VOLUME,
    PodPieces,
    env,
    pod_pieces,
    resources,
    s3_env,
    scheduling,
)
from rlkd.k8s.resolve import model_uri, storage_of
from rlkd.spec.job import InferenceSpec, RLKDJobSpec, VLLMServer
from rlkd.spec.refs import S3_SCHEME
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import INFERENCE_PORT, INFERENCE_ROLES, InferenceRole

PORT_NAME = "http"
ROLLOUT_ARGS = (
    "--weight-transfer-config",
    json.dumps({"backend": "nccl"}),
    "--logprobs-mode",
    "processed_logprobs",
    "--max-logprobs",
    "-1",
)
"""What `trl vllm-serve` (TRL 1.16) adds to `vllm serve` for a rollout server; with it the server
needs VLLM_SERVER_DEV_MODE=1, which exposes the weight-transfer endpoints."""

# A server is ready only once its model is loaded: vLLM lists the model at /v1/models from then
# on. The startup probe's budget is the role's vllm.startupTimeoutSeconds (startup_probe).
_MODELS = {"httpGet": {"path": "/v1/models", "port": PORT_NAME}, "timeoutSeconds": 5}
STARTUP_PERIOD_SECONDS = 10
READINESS_PROBE = {**_MODELS, "periodSeconds": 10, "failureThreshold": 3}
LIVENESS_PROBE = {
    "httpGet": {"path": "/health", "port": PORT_NAME},
    "timeoutSeconds": 10,
    "periodSeconds": 30,
    "failureThreshold": 3,
}


def startup_probe(vllm: VLLMServer) -> dict[str, Any]:
    """The startup probe whose budget (failureThreshold x periodSeconds) is at least the role's
    startupTimeoutSeconds: a download from the hub, loading and CUDA graph capture."""
    failures = -(-vllm.startup_timeout_seconds // STARTUP_PERIOD_SECONDS)
    return {**_MODELS, "periodSeconds": STARTUP_PERIOD_SECONDS, "failureThreshold": failures}


class Server(NamedTuple):
    """What one role serves: the model reference, the name clients ask for, the vLLM settings."""

    model: str
    served_name: str
    vllm: VLLMServer


ROLE_FIELDS: dict[InferenceRole, str] = {
    "gsrm": "spec.gsrm",
    "judge": "spec.judge",
    "teacher": "spec.teacher.model",
    "annotator": "spec.gsrm.build.annotator",
}
"""Where each served role's InferenceSpec is in the spec (rollout serves spec.student)."""


def _inference_specs(spec: RLKDJobSpec) -> dict[InferenceRole, InferenceSpec | None]:
    build = spec.gsrm.build if spec.gsrm is not None else None
    return {
        "gsrm": spec.gsrm,
        "judge": spec.judge,
        "teacher": spec.teacher.model,
        "annotator": build.annotator if build is not None else None,
    }


def inference_roles(spec: RLKDJobSpec) -> list[InferenceRole]:
    """The roles that need a vLLM server, in a fixed order: gsrm, judge, teacher and a GSRM
    build's annotator when their backend is vllm (openai, transformers and rule need no child),
    rollout in server mode."""
    served = _inference_specs(spec)
    return [
        role
        for role in INFERENCE_ROLES
        if (role == "rollout" and spec.rollout.mode == "server")
        or ((s := served.get(role)) is not None and s.backend == "vllm")
    ]


def role_server(spec: RLKDJobSpec, role: InferenceRole) -> Server:
    """The server `role` runs: the student for rollouts, the role's own model otherwise."""
    if role not in inference_roles(spec):
        raise ValueError(f"role {role!r} needs no vLLM server in this job")
    if role == "rollout":
        return Server(spec.student.model, role, spec.rollout.vllm)
    served = _inference_specs(spec)[role]
    if served is None or served.model is None:  # the spec's rules forbid it; say which field
        raise SpecError([f"{ROLE_FIELDS[role]}.model: is required unless backend is rule"])
    return Server(served.model, served.served_model_name or role, served.vllm)


def _container(
    job: RLKDJob, role: InferenceRole, server: Server, image: str, pieces: PodPieces
) -> dict[str, Any]:
    storage = storage_of(job)
    vllm = server.vllm
    model = model_uri(server.model, storage)
    args = [
        model,
        "--served-model-name",
        server.served_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(INFERENCE_PORT),
        "--tensor-parallel-size",
        str(vllm.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(vllm.gpu_memory_utilization),
        "--dtype",
        vllm.dtype,
    ]
    if vllm.max_model_len is not None:
        args += ["--max-model-len", str(vllm.max_model_len)]
    variables: list[dict[str, Any]] = []
    if model.startswith(S3_SCHEME):
        # Stream the safetensors straight from the store into GPU memory: no copy on disk, no
        # init container, and the image already ships the Run:ai streamer.
        args += ["--load-format", "runai_streamer"]
        variables += s3_env(storage)
    args += vllm.extra_args
    if role == "rollout":
        # After the user's extra args: vLLM keeps the last value, and TRL's client needs these.
        args += ROLLOUT_ARGS
        variables.append(env("VLLM_SERVER_DEV_MODE", "1"))
    variables += pieces.env
    return {
        "name": "vllm",
        "image": image,
        "command": ["vllm", "serve"],
        "args": args,
        **({"env": variables} if variables else {}),
        "ports": [{"name": PORT_NAME, "containerPort": INFERENCE_PORT, "protocol": "TCP"}],
        "resources": resources(vllm, vllm.tensor_parallel_size),
        "volumeMounts": [SHM_MOUNT, *pieces.mounts],
        "startupProbe": startup_probe(vllm),
        "readinessProbe": READINESS_PROBE,
        "livenessProbe": LIVENESS_PROBE,
        **pieces.container,
    }


def build_deployment(
    job: RLKDJob, role: InferenceRole, defaults: OperatorDefaults, replicas: int | None = None
) -> dict[str, Any]:
    """The vLLM Deployment of `role` in a resolved job; `replicas` overrides the spec's count
    (0 scales the server to zero)."""
    server = role_server(job.spec, role)
    vllm = server.vllm
    pieces = pod_pieces(job, labels(job, "inference", role))
    image = vllm.image or defaults.vllm_image
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(job, inference_name(job, role), "inference", role),
        "spec": {
            "replicas": vllm.replicas if replicas is None else replicas,
            "selector": {"matchLabels": selector_labels(job, role)},
            # Replace, never surge: a rolling update would hold a second set of GPUs.
            "strategy": {"type": "Recreate"},
            "template": {
                "metadata": pieces.metadata,
                "spec": {
                    "enableServiceLinks": False,
                    "containers": [_container(job, role, server, image, pieces)],
                    "volumes": [SHM_VOLUME, *pieces.volumes],
                    **scheduling(vllm),
                    **pieces.pod,
                },
            },
        },
    }


def build_service(job: RLKDJob, role: InferenceRole) -> dict[str, Any]:
    """The ClusterIP Service in front of `role`'s servers (the learner's endpoint)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(job, inference_name(job, role), "inference", role),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(job, role),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": INFERENCE_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
