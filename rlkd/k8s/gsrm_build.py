"""A GSRM build's PyTorchJob, `<job>-build`: the GSRM's supervised fine-tuning (`rlkd
train-gsrm`) on the learner's placement (spec.learner: image, replicas, GPUs, DeepSpeed), then its
quality gate (`rlkd eval-gsrm`), before the RLKD run. Made by the learner's parts
(rlkd.k8s.learner), so the launch is the learner's: every pod runs `rlkd train-gsrm`, which
starts one process per GPU through torchrun from the Training Operator's PET_* variables.

The gate runs once, on the Master, after its training: `rlkd train-gsrm && exec rlkd eval-gsrm`.
One pod, one command line, so the PyTorchJob succeeds only when the GSRM is trained, uploaded
and passes the gate (the Training Operator ends a job with a Master by the Master's exit), and
fails with the gate; the Workers end with their training. Not queued in Kueue: it is created
only when the build has work to do, and ends before the learner is created.
"""

from __future__ import annotations

from typing import Any

from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.inference import inference_roles
from rlkd.k8s.learner import pod_template, pytorch_env, pytorchjob
from rlkd.k8s.naming import build_name, child_metadata
from rlkd.spec.job import RLKDJobSpec
from rlkd.spec.progress import gate_judges
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import InferenceRole

TRAIN_COMMAND = ["rlkd", "train-gsrm"]
MASTER_COMMAND = ["sh", "-c", "rlkd train-gsrm && exec rlkd eval-gsrm"]
"""The Master trains, then gates; its exit status is the gate's (1 when the GSRM fails it)."""


def build_servers(spec: RLKDJobSpec) -> list[InferenceRole]:
    """The roles whose vLLM servers the build calls (it is created once they are available): the
    judge, when the operator serves it and the gate asks for step agreement
    (gate.minStepAgreement > 0), which `rlkd eval-gsrm` measures with it."""
    if not gate_judges(spec):
        return []
    return [role for role in inference_roles(spec) if role == "judge"]


def build_gsrm_pytorchjob(job: RLKDJob, defaults: OperatorDefaults) -> dict[str, Any]:
    """The build's PyTorchJob of a resolved job with spec.gsrm.build, suspended while the spec
    says so."""
    if job.spec.gsrm is None or job.spec.gsrm.build is None:
        raise ValueError("the job has no spec.gsrm.build: there is no GSRM to build")
    variables = pytorch_env(job, build_servers(job.spec))
    master = pod_template(job, defaults, "build", MASTER_COMMAND, variables)
    worker = pod_template(job, defaults, "build", TRAIN_COMMAND, variables)
    metadata = child_metadata(job, build_name(job), "build")
    return pytorchjob(job, metadata, master, worker, suspend=job.spec.suspend)
