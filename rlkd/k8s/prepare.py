"""The prepare Job: a `batch/v1` Job named `<job>-prepare` whose pod runs `rlkd prepare` (teacher
paths sampled, teacher decompositions cached) before the learner exists, so the learner's GPUs
are not held while the teacher side is computed.

CPU-only when every role it calls is a server; a role it loads in-process (backend transformers)
runs on the learner's GPUs and placement (rlkd.k8s.batch).
"""

from __future__ import annotations

from typing import Any

from rlkd.k8s.batch import build_rlkd_job
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.inference import inference_roles
from rlkd.k8s.naming import prepare_name, service_url
from rlkd.k8s.pods import env
from rlkd.spec.job import InferenceSpec, RLKDJobSpec
from rlkd.spec.progress import needs_decompositions, needs_prepare
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import InferenceRole, endpoint_env


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
    prepare Job has cached before the learner starts, and a GSRM build's annotator."""
    return [role for role in inference_roles(spec) if role not in ("teacher", "annotator")]


def prepare_gpus(spec: RLKDJobSpec) -> int:
    """GPUs of the prepare pod: the learner's when it loads a model in-process (transformers),
    else none."""
    in_process = any(s.backend == "transformers" for s in prepare_specs(spec).values())
    return spec.learner.gpus_per_replica if in_process else 0


def build_prepare_job(job: RLKDJob, defaults: OperatorDefaults) -> dict[str, Any]:
    """The prepare Job of a resolved job that needs preparing (rlkd.spec.progress.needs_prepare)."""
    return build_rlkd_job(
        job,
        defaults,
        name=prepare_name(job),
        component="prepare",
        command=["rlkd", "prepare"],
        variables=[
            env(endpoint_env(role), service_url(job, role)) for role in prepare_servers(job.spec)
        ],
        gpus=prepare_gpus(job.spec),
    )
