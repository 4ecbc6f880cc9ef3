"""The job as its children see it: the operator's defaults filled in, references made concrete.

Builders take a resolved job, so a child never depends on what the document left empty.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from rlkd.errors import SpecError
from rlkd.k8s.defaults import STORAGE_ENV, GPUScheduling, OperatorDefaults
from rlkd.k8s.kueue import QUEUE_LABEL
from rlkd.k8s.naming import store_secret_name
from rlkd.spec.job import (
    HubSpec,
    InferenceSpec,
    LearnerSpec,
    NetworkSpec,
    PodSettings,
    RLKDJobSpec,
    StorageSpec,
    VLLMServer,
)
from rlkd.spec.refs import DNS1123_LABEL, PATTERN_HINTS, S3_SCHEME, STORE_SCHEME
from rlkd.spec.resource import RLKDJob, namespace_of


def resolve_job(job: RLKDJob, defaults: OperatorDefaults) -> RLKDJob:
    """`job` with its namespace, store, Kueue queue, pod settings, hub and network settings and
    the GPU pods' nodeSelector and tolerations filled in (status dropped), or SpecError. A job
    on the default store reads its keys from its own copy of the default store's Secret
    (rlkd.k8s.store_secret)."""
    storage = job.spec.storage or defaults.storage
    copied = job.spec.storage is None and storage is not None and storage.credentials_secret
    if copied and storage is not None and defaults.namespace:
        # Pods read the job's copy of the default store's Secret.
        storage = storage.model_copy(update={"credentials_secret": store_secret_name(job)})
    if storage is None:
        raise SpecError(
            [
                "spec.storage: is required: this operator has no default store; set spec.storage, "
                "or give the operator one (chart values storage.endpoint and storage.bucket, "
                f"or the environment variables {STORAGE_ENV['endpoint']} and "
                f"{STORAGE_ENV['bucket']})"
            ]
        )
    return job.model_copy(
        update={
            "metadata": job.metadata.model_copy(update={"namespace": namespace_of(job)}),
            "spec": job.spec.model_copy(
                update={
                    "storage": storage,
                    "learner": _on_gpus(
                        job.spec.learner.model_copy(
                            update={"queue_name": _queue_name(job) or defaults.queue_name}
                        ),
                        defaults.gpu,
                        gpus=job.spec.learner.gpus_per_replica,
                    ),
                    **_servers_on_gpus(job.spec, defaults.gpu),
                    "pods": resolve_pods(job.spec.pods, defaults.pods),
                    "hub": _either(job.spec.hub, defaults.hub),
                    "network": _either(job.spec.network, defaults.network),
                }
            ),
            "status": None,
        }
    )


_Placed = TypeVar("_Placed", LearnerSpec, VLLMServer)


def _on_gpus(placement: _Placed, gpu: GPUScheduling, *, gpus: int) -> _Placed:
    """A GPU pod's placement: the operator's GPU nodeSelector and tolerations when the job sets
    neither (a job that sets one of them has chosen its nodes)."""
    if not gpus or placement.node_selector or placement.tolerations:
        return placement
    return placement.model_copy(
        update={"node_selector": gpu.node_selector, "tolerations": gpu.tolerations}
    )


def _servers_on_gpus(spec: RLKDJobSpec, gpu: GPUScheduling) -> dict[str, Any]:
    """The spec sections whose vLLM servers the operator deploys, placed on GPU nodes."""
    out: dict[str, Any] = {}
    if spec.rollout.mode == "server":
        vllm = _on_gpus(spec.rollout.vllm, gpu, gpus=1)
        out["rollout"] = spec.rollout.model_copy(update={"vllm": vllm})
    for name in ("gsrm", "judge"):
        served: InferenceSpec | None = getattr(spec, name)
        if served is not None and served.backend == "vllm":
            out[name] = served.model_copy(update={"vllm": _on_gpus(served.vllm, gpu, gpus=1)})
    gsrm = out.get("gsrm", spec.gsrm)
    if gsrm is not None and gsrm.build is not None and gsrm.build.annotator.backend == "vllm":
        annotator = gsrm.build.annotator
        placed = annotator.model_copy(update={"vllm": _on_gpus(annotator.vllm, gpu, gpus=1)})
        out["gsrm"] = gsrm.model_copy(
            update={"build": gsrm.build.model_copy(update={"annotator": placed})}
        )
    teacher = spec.teacher.model
    if teacher is not None and teacher.backend == "vllm":
        model = teacher.model_copy(update={"vllm": _on_gpus(teacher.vllm, gpu, gpus=1)})
        out["teacher"] = spec.teacher.model_copy(update={"model": model})
    return out


def _queue_name(job: RLKDJob) -> str | None:
    """spec.learner.queueName, else the RLKDJob's kueue.x-k8s.io/queue-name label (checked here:
    the CRD's schema does not reach metadata)."""
    if job.spec.learner.queue_name:
        return job.spec.learner.queue_name
    label = job.metadata.labels.get(QUEUE_LABEL)
    if label is not None and not (len(label) <= 63 and re.fullmatch(DNS1123_LABEL, label)):
        raise SpecError(
            [
                f"metadata.labels[{QUEUE_LABEL}]: {PATTERN_HINTS[DNS1123_LABEL]}, not {label!r}; "
                "name the Kueue LocalQueue there or in spec.learner.queueName"
            ]
        )
    return label or None


def resolve_pods(own: PodSettings | None, default: PodSettings) -> PodSettings:
    """The job's pod settings over the operator's: scalars and the pull Secrets from the job when
    it sets them, labels, annotations and env merged key by key (the job's winning). Neither
    sets a label or variable the operator sets: PodSettings' rules refuse them."""
    own = own or PodSettings()
    env = {e.name: e for e in default.env} | {e.name: e for e in own.env}
    secrets = own.image_pull_secrets
    return PodSettings(
        service_account_name=own.service_account_name or default.service_account_name,
        image_pull_secrets=secrets if secrets is not None else default.image_pull_secrets or [],
        labels={**default.labels, **own.labels},
        annotations={**default.annotations, **own.annotations},
        env=list(env.values()),
        security=own.security or default.security or "restricted",
    )


_Section = TypeVar("_Section", HubSpec, NetworkSpec)


def _either(own: _Section | None, default: _Section) -> _Section:
    """Each field from the job when it sets it, else the operator's."""
    if own is None:
        return default
    return own.model_copy(update={k: v for k, v in default if getattr(own, k) is None})


def storage_of(job: RLKDJob) -> StorageSpec:
    """The store of a resolved job."""
    if job.spec.storage is None:
        raise SpecError(["spec.storage: is empty: build children from resolve_job(job, defaults)"])
    return job.spec.storage


def model_uri(ref: str, storage: StorageSpec) -> str:
    """Where a server loads `ref` from: store://path becomes s3://<bucket>/<storage.prefix>/path
    (shared models live beside the runs, not inside one run's prefix); s3:// URIs, container
    paths and hub ids stay as they are."""
    if not ref.startswith(STORE_SCHEME):
        return ref
    key = "/".join(p for p in (storage.prefix.strip("/"), ref.removeprefix(STORE_SCHEME)) if p)
    return f"{S3_SCHEME}{storage.bucket}/{key}"
