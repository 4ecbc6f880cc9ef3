"""What the operator's chart values give the builders: pinned images and the default store.

The operator Deployment sets them as environment variables; `rlkd render` reads the same ones,
so a render on a laptop matches what the operator builds on the cluster.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import Field, ValidationError
from pydantic.alias_generators import to_snake

from rlkd import __version__
from rlkd.errors import SpecError
from rlkd.spec.base import SpecModel
from rlkd.spec.job import (
    HubSpec,
    NetworkSpec,
    PodSettings,
    StorageSpec,
    Toleration,
    qualified_keys,
)
from rlkd.spec.refs import (
    DNS1123_LABEL,
    MAX_MAP_KEYS,
    PATTERN_HINTS,
    S3_BUCKET_PATTERN,
    LabelValue,
    s3_bucket_problems,
)

VLLM_IMAGE = "vllm/vllm-openai:v0.30.0"
"""Upstream vLLM server image. Pinned inside the range TRL's rollout client supports
(vLLM 0.22 to 0.31 for TRL 1.16), with the Run:ai streamer that loads models from S3."""
IMAGE_REGISTRY = "ghcr.io/rlkd"
"""Where images/*/Dockerfile are named to go (rlkd-operator, rlkd-trainer). Nobody publishes them
there yet: build and push them, then set the chart's image values (images/README.md)."""
TRAINER_IMAGE = f"{IMAGE_REGISTRY}/rlkd-trainer:{__version__}"
"""The learner and prepare image (images/trainer/Dockerfile): CUDA torch, vLLM, rlkd[train]."""

OPERATOR_NAMESPACE_ENV = "RLKD_OPERATOR_NAMESPACE"
"""The operator's own namespace (the chart sets it from the pod's): where the default store's
Secret lives, which the operator copies into each job's namespace."""
VLLM_IMAGE_ENV = "RLKD_VLLM_IMAGE"
TRAINER_IMAGE_ENV = "RLKD_TRAINER_IMAGE"
STORAGE_ENV_PREFIX = "RLKD_DEFAULT_STORAGE_"
# The default store, one variable per StorageSpec field; ENDPOINT and BUCKET are required once
# any of them is set.
STORAGE_ENV = {
    field: STORAGE_ENV_PREFIX + field.upper()
    for field in ("endpoint", "bucket", "prefix", "region", "credentials_secret")
}
# Every child pod's settings (spec.pods), the hub cache and token (spec.hub), the monitoring
# namespace (spec.network): one variable per field. Lists are comma-separated; labels and
# annotations are JSON objects; env is a JSON object of names to values.
POD_ENV = {
    "service_account_name": "RLKD_POD_SERVICE_ACCOUNT_NAME",
    "image_pull_secrets": "RLKD_POD_IMAGE_PULL_SECRETS",
    "labels": "RLKD_POD_LABELS",
    "annotations": "RLKD_POD_ANNOTATIONS",
    "env": "RLKD_POD_ENV",
    "security": "RLKD_POD_SECURITY",
}
HUB_ENV = {"cache_claim": "RLKD_HUB_CACHE_CLAIM", "token_secret": "RLKD_HUB_TOKEN_SECRET"}
# Where GPU pods run when the job says nothing: a JSON object of node labels, a JSON list of
# tolerations (the RLKDJob's own form, camelCase).
GPU_ENV = {"node_selector": "RLKD_GPU_NODE_SELECTOR", "tolerations": "RLKD_GPU_TOLERATIONS"}
QUEUE_ENV = "RLKD_DEFAULT_QUEUE_NAME"
"""The Kueue LocalQueue of learners whose job names none (spec.learner.queueName)."""
_JSON_OBJECTS = ("labels", "annotations", "env", "node_selector")
NETWORK_ENV = {"monitoring_namespace": "RLKD_MONITORING_NAMESPACE"}


class GPUScheduling(SpecModel):
    """Where GPU pods (the vLLM servers, a learner with GPUs) run when their job sets neither a
    nodeSelector nor tolerations of its own: the cluster's GPU node labels and taints, once."""

    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=MAX_MAP_KEYS)
    """Node labels GPU pods require."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints GPU pods tolerate."""

    rules = (qualified_keys("nodeSelector"),)


@dataclass(frozen=True)
class OperatorDefaults:
    """Settings that belong to the installation, not to one RLKDJob."""

    vllm_image: str = VLLM_IMAGE
    """Image of every vLLM server whose spec names none (`vllm.image`)."""
    trainer_image: str = TRAINER_IMAGE
    """Image of the learner pods when `learner.image` is empty."""
    storage: StorageSpec | None = None
    """The store of every RLKDJob without `spec.storage`; None makes that field required."""
    pods: PodSettings = field(default_factory=PodSettings)
    """What `spec.pods` leaves unset (labels, annotations and env are merged, the job winning)."""
    hub: HubSpec = field(default_factory=HubSpec)
    """What `spec.hub` leaves unset: the default Hugging Face cache claim and token Secret."""
    network: NetworkSpec = field(default_factory=NetworkSpec)
    """What `spec.network` leaves unset: the default monitoring namespace."""
    gpu: GPUScheduling = field(default_factory=GPUScheduling)
    """nodeSelector and tolerations of GPU pods whose job sets neither."""
    queue_name: str | None = None
    """The Kueue LocalQueue of learners whose job names none."""
    namespace: str | None = None
    """The operator's namespace, which holds the default store's Secret (`storage`'s
    credentialsSecret); each job that uses the default store gets a copy in its own namespace.
    None (only in code: from_env requires it with a Secret): pods read that Secret by its name in
    their own namespace."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OperatorDefaults:
        """Read RLKD_VLLM_IMAGE, RLKD_TRAINER_IMAGE, RLKD_DEFAULT_STORAGE_{ENDPOINT, BUCKET,
        PREFIX, REGION, CREDENTIALS_SECRET}, RLKD_POD_*, RLKD_HUB_*, RLKD_MONITORING_NAMESPACE,
        RLKD_GPU_*, RLKD_DEFAULT_QUEUE_NAME and RLKD_OPERATOR_NAMESPACE; unset or empty variables
        keep the defaults."""
        storage = _storage_from_env(env)
        namespace = env.get(OPERATOR_NAMESPACE_ENV) or None
        if storage is not None and storage.credentials_secret and namespace is None:
            raise SpecError(
                [
                    f"{OPERATOR_NAMESPACE_ENV}: is required when "
                    f"{STORAGE_ENV['credentials_secret']} is set: name the namespace that holds "
                    "that Secret (the chart sets it to the operator's own)"
                ]
            )
        labels = {OPERATOR_NAMESPACE_ENV: namespace, QUEUE_ENV: env.get(QUEUE_ENV) or None}
        if bad := [
            f"{var}: {PATTERN_HINTS[DNS1123_LABEL]}"
            for var, value in labels.items()
            if value is not None and not (len(value) <= 63 and re.fullmatch(DNS1123_LABEL, value))
        ]:
            raise SpecError(bad)
        return cls(
            vllm_image=env.get(VLLM_IMAGE_ENV) or VLLM_IMAGE,
            trainer_image=env.get(TRAINER_IMAGE_ENV) or TRAINER_IMAGE,
            storage=storage,
            namespace=namespace,
            pods=_settings_from_env(PodSettings, POD_ENV, env),
            hub=_settings_from_env(HubSpec, HUB_ENV, env),
            network=_settings_from_env(NetworkSpec, NETWORK_ENV, env),
            gpu=_settings_from_env(GPUScheduling, GPU_ENV, env),
            queue_name=labels[QUEUE_ENV],
        )


_Settings = TypeVar("_Settings", PodSettings, HubSpec, NetworkSpec, GPUScheduling)


def _settings_from_env(
    model: type[_Settings], variables: Mapping[str, str], env: Mapping[str, str]
) -> _Settings:
    """One settings model from its variables, or SpecError naming each variable that is wrong."""
    values: dict[str, Any] = {}
    problems = []
    for name, var in variables.items():
        if not (raw := env.get(var)):
            continue
        if name == "image_pull_secrets":
            values[name] = [item.strip() for item in raw.split(",") if item.strip()]
            continue
        if name not in (*_JSON_OBJECTS, "tolerations"):
            values[name] = raw
            continue
        kind, example = (
            ("object", '{"key": "value"}')
            if name in _JSON_OBJECTS
            else ("list", '[{"key": "nvidia.com/gpu", "operator": "Exists"}]')
        )
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"{var}: must be a JSON {kind}: {exc}")
            continue
        if not isinstance(parsed, dict if kind == "object" else list):
            problems.append(f"{var}: must be a JSON {kind}, e.g. {example}")
            continue
        if name == "env" and isinstance(parsed, dict):
            parsed = [{"name": k, "value": v} for k, v in parsed.items()]
        values[name] = parsed
    if problems:
        raise SpecError(problems)
    try:
        return model(**values)
    except ValidationError as exc:
        raise SpecError(
            [line for error in exc.errors() for line in _settings_problems(error, variables)]
        ) from None


def _settings_problems(error: Any, variables: Mapping[str, str]) -> list[str]:
    """One line per problem, naming the variable of the settings field that does not validate
    (a rule of the model names its field, e.g. labels: a reserved key)."""
    if error["type"] == "rule_broken" and not error["loc"]:
        return [
            f"{variables.get(to_snake(field), ', '.join(variables.values()))}: {message}"
            for field, message in error["ctx"]["broken"]
        ]
    where = variables.get(str(error["loc"][0])) if error["loc"] else None
    message = error["msg"]
    if error["type"] == "string_pattern_mismatch":
        message = PATTERN_HINTS.get(error["ctx"]["pattern"], message)
    inside = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"][1:])
    if inside:  # where inside the variable's JSON, e.g. [0].operatr
        message = f"{inside.lstrip('.')}: {message}"
    return [f"{where or ', '.join(variables.values())}: {message}"]


def _storage_from_env(env: Mapping[str, str]) -> StorageSpec | None:
    values = {field: env[var] for field, var in STORAGE_ENV.items() if env.get(var)}
    if not values:
        return None
    missing = [STORAGE_ENV[f] for f in ("endpoint", "bucket") if f not in values]
    if missing:
        raise SpecError(
            [f"{var}: is required when any {STORAGE_ENV_PREFIX}* is set" for var in missing]
        )
    try:
        return StorageSpec(**values)
    except ValidationError as exc:
        raise SpecError([_env_problem(error) for error in exc.errors()]) from None


def _env_problem(error: Any) -> str:
    """One line naming the variable (a cross-field rule names its field in the message)."""
    where = STORAGE_ENV[str(error["loc"][0])] if error["loc"] else f"{STORAGE_ENV_PREFIX}*"
    message = error["msg"]
    if error["type"] == "string_pattern_mismatch" and error["ctx"]["pattern"] == S3_BUCKET_PATTERN:
        message = "must be a valid S3 bucket name: " + "; ".join(s3_bucket_problems(error["input"]))
    elif error["type"] == "string_pattern_mismatch":
        message = PATTERN_HINTS.get(error["ctx"]["pattern"], message)
    return f"{where}: {message}"
