"""A GSRM build's annotate Job: a `batch/v1` Job named `<job>-annotate` whose pod runs `rlkd
annotate` (the annotator decomposes the teacher's paths into SFT records in the store) before the
build's PyTorchJob, so no training GPU is held while a server or an API annotates.

CPU-only unless the annotator is loaded in-process (backend transformers): then it runs on the
learner's GPUs and placement (rlkd.k8s.batch).
"""

from __future__ import annotations

from typing import Any

from rlkd.k8s.batch import build_rlkd_job
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.inference import inference_roles
from rlkd.k8s.naming import annotate_name, service_url
from rlkd.k8s.pods import env
from rlkd.spec.job import GSRMBuildSpec, RLKDJobSpec
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import ANNOTATOR_KEY_ENV, InferenceRole, endpoint_env


def gsrm_build(spec: RLKDJobSpec) -> GSRMBuildSpec | None:
    """spec.gsrm.build, when the job builds its GSRM."""
    return spec.gsrm.build if spec.gsrm is not None else None


def annotate_servers(spec: RLKDJobSpec) -> list[InferenceRole]:
    """The roles whose vLLM servers the annotate Job calls (it starts once they are available):
    the annotator, when the operator serves it."""
    return [role for role in inference_roles(spec) if role == "annotator"]


def annotator_key_env(build: GSRMBuildSpec) -> list[dict[str, Any]]:
    """The annotator's API key by reference to annotatorKeySecret, never its value: no manifest,
    argument or log holds it."""
    if build.annotator_key_secret is None:
        return []
    secret = {"name": build.annotator_key_secret, "key": ANNOTATOR_KEY_ENV}
    return [{"name": ANNOTATOR_KEY_ENV, "valueFrom": {"secretKeyRef": secret}}]


def build_annotate_job(job: RLKDJob, defaults: OperatorDefaults) -> dict[str, Any]:
    """The annotate Job of a resolved job with a GSRM build (spec.gsrm.build)."""
    build = gsrm_build(job.spec)
    if build is None:
        raise ValueError("the job has no spec.gsrm.build: there is nothing to annotate")
    servers = [env(endpoint_env(r), service_url(job, r)) for r in annotate_servers(job.spec)]
    in_process = build.annotator.backend == "transformers"
    return build_rlkd_job(
        job,
        defaults,
        name=annotate_name(job),
        component="annotate",
        command=["rlkd", "annotate"],
        variables=servers + annotator_key_env(build),
        gpus=job.spec.learner.gpus_per_replica if in_process else 0,
    )
