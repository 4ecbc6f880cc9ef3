"""Names the pods and the code inside them agree on: the environment a learner gets from the
operator, the variables every pod gets from the builders, and the port inference servers listen
on. Defined once, used by the builders that set them, the code that reads them, and the spec rule
that keeps `spec.pods.env` off them."""

from __future__ import annotations

from typing import Literal, get_args

InferenceRole = Literal["gsrm", "judge", "teacher", "rollout", "annotator"]
"""Who calls an OpenAI-compatible model: the reward engine (gsrm, judge), prepare (teacher), the
learner's rollouts, and a GSRM build's annotation (spec.gsrm.build.annotator)."""
INFERENCE_ROLES: tuple[InferenceRole, ...] = get_args(InferenceRole)

INFERENCE_PORT = 8000
"""Port of every vLLM server the operator deploys (its Service too)."""

JOB_FILE_ENV = "RLKD_JOB_FILE"
"""Path of the resolved RLKDJob (YAML) that `rlkd train` reads."""
DEEPSPEED_FILE_ENV = "RLKD_DEEPSPEED_FILE"
"""Path of the DeepSpeed JSON (rlkd.spec.deepspeed.deepspeed_config of the resolved job)."""
STORE_ENDPOINT_ENV = "RLKD_STORE_ENDPOINT"
STORE_BUCKET_ENV = "RLKD_STORE_BUCKET"
STORE_PREFIX_ENV = "RLKD_STORE_PREFIX"
"""The run's own prefix in the bucket (rlkd.spec.progress.run_prefix)."""
STORE_REGION_ENV = "RLKD_STORE_REGION"
ANNOTATOR_KEY_ENV = "RLKD_ANNOTATOR_API_KEY"
"""The annotator's API key (spec.gsrm.build.annotatorKeySecret holds it under this key too)."""
ACCESS_KEY_VAR = "AWS_ACCESS_KEY_ID"
SECRET_KEY_VAR = "AWS_SECRET_ACCESS_KEY"
"""The storage Secret's keys, and the variables the AWS SDKs read them from."""
HF_TOKEN_VAR = "HF_TOKEN"
"""The key of the hub token Secret, and the variable huggingface_hub reads it from."""
STORE_SECRET_DIR = "/var/run/secrets/rlkd/store"
"""Where the storage Secret is mounted (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY files)."""
STORE_SECRET_DIR_ENV = "RLKD_STORE_SECRET_DIR"
"""Another place for the storage Secret's files than STORE_SECRET_DIR: where a pod's volumes are
not mounted at their paths (the tests' local pod runner lays them out under a temp root)."""

BUILDER_ENV_PREFIX = "RLKD_"
"""Every variable the operator's own code reads starts so (the names above, endpoint_env)."""
BUILDER_ENV = (
    "AWS_ENDPOINT_URL",
    "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    ACCESS_KEY_VAR,
    SECRET_KEY_VAR,
    "AWS_EC2_METADATA_DISABLED",
    "VLLM_SERVER_DEV_MODE",
    "HF_HOME",
    HF_TOKEN_VAR,
    "HOME",
    "USER",
)
"""Variables the builders (rlkd.k8s) set besides BUILDER_ENV_PREFIX*: `spec.pods.env` may not
set them (a rule of rlkd.spec.job.PodSettings). A tuple, so the CRD's rule is written in a fixed
order."""


def endpoint_env(role: InferenceRole) -> str:
    """The variable holding the base URL (…/v1) of the server deployed for `role`, e.g.
    RLKD_GSRM_URL."""
    return f"RLKD_{role.upper()}_URL"
