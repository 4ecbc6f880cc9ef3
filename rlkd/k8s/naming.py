"""Names, labels and owner references of an RLKDJob's children, in one place.

Names are deterministic, so the operator finds its children again by name alone. The job's name
is at most 45 characters (rlkd.spec.refs.MAX_NAME_LENGTH), so `<job>-<role>` stays a DNS label
(63) for the Services and the PyTorchJob's pods (`<job>-worker-<n>`) fit too.
"""

from __future__ import annotations

from typing import Any, Literal

from rlkd.spec.resource import API_VERSION, KIND, RLKDJob, namespace_of
from rlkd.spec.runtime import INFERENCE_PORT, InferenceRole

JOB_LABEL = "rlkd.ai/job"
ROLE_LABEL = "rlkd.ai/role"
COMPONENT_LABEL = "app.kubernetes.io/component"
"""What a child is (Component): tells a job's batch Jobs and PyTorchJobs apart."""
Component = Literal["config", "inference", "prepare", "annotate", "build", "learner", "store"]


def learner_name(job: RLKDJob) -> str:
    """The PyTorchJob: named exactly as the RLKDJob, so `kubectl get pytorchjob <name>` works."""
    return job.metadata.name


def config_name(job: RLKDJob) -> str:
    """The ConfigMap holding the resolved job."""
    return f"{job.metadata.name}-config"


def prepare_name(job: RLKDJob) -> str:
    """The batch Job that runs `rlkd prepare` before the learner starts."""
    return f"{job.metadata.name}-prepare"


def annotate_name(job: RLKDJob) -> str:
    """The batch Job that runs `rlkd annotate` for a GSRM build (spec.gsrm.build)."""
    return f"{job.metadata.name}-annotate"


def build_name(job: RLKDJob) -> str:
    """The PyTorchJob that trains and gates the GSRM of a build (spec.gsrm.build)."""
    return f"{job.metadata.name}-build"


def inference_name(job: RLKDJob, role: InferenceRole) -> str:
    """The Deployment and the Service of one inference role."""
    return f"{job.metadata.name}-{role}"


def store_secret_name(job: RLKDJob) -> str:
    """The job's copy of the operator's default store Secret (rlkd.k8s.store_secret)."""
    return f"{job.metadata.name}-store-credentials"


def network_policy_name(job: RLKDJob) -> str:
    """The NetworkPolicy that admits traffic to the job's inference servers."""
    return f"{job.metadata.name}-inference"


def server_root(job: RLKDJob, role: InferenceRole) -> str:
    """The root URL of a role's server inside the cluster (its Service)."""
    return f"http://{inference_name(job, role)}.{namespace_of(job)}.svc:{INFERENCE_PORT}"


def service_url(job: RLKDJob, role: InferenceRole) -> str:
    """The base URL of a role's server, as the learner reaches it: the OpenAI-compatible
    `.../v1` for the reward engine's clients, the server root for the rollout server (TRL's
    client adds the paths, `/v1/...` and the weight-transfer ones, itself)."""
    root = server_root(job, role)
    return root if role == "rollout" else f"{root}/v1"


def selector_labels(job: RLKDJob, role: InferenceRole) -> dict[str, str]:
    """The labels a role's Service and Deployment select pods by (immutable once created)."""
    return {JOB_LABEL: job.metadata.name, ROLE_LABEL: role}


def labels(job: RLKDJob, component: Component, role: InferenceRole | None = None) -> dict[str, str]:
    """The labels of every child (and of the pods they make)."""
    out = {
        "app.kubernetes.io/name": "rlkd",
        "app.kubernetes.io/instance": job.metadata.name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": "rlkd",
        "app.kubernetes.io/managed-by": "rlkd-operator",
        JOB_LABEL: job.metadata.name,
    }
    if role is not None:
        out[ROLE_LABEL] = role
    return out


def owner_references(job: RLKDJob) -> list[dict[str, Any]]:
    """The RLKDJob as controlling owner, so deleting it deletes the children. Empty when the uid
    is unknown (an offline render: only the API server assigns uids)."""
    if not job.metadata.uid:
        return []
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": job.metadata.name,
            "uid": job.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def child_metadata(
    job: RLKDJob, name: str, component: Component, role: InferenceRole | None = None
) -> dict[str, Any]:
    """The `metadata` of one child."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace_of(job),
        "labels": labels(job, component, role),
    }
    if owners := owner_references(job):
        meta["ownerReferences"] = owners
    return meta
