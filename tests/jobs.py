"""RLKDJobs for builder tests: a small valid document, changed only where a test says so."""

from __future__ import annotations

import copy
from typing import Any

from rlkd.k8s import OperatorDefaults
from rlkd.spec.job import StorageSpec
from rlkd.spec.resource import RLKDJob
from rlkd.spec.validate import parse_job

STORE = StorageSpec(
    endpoint="http://minio.rlkd-system.svc:9000",
    bucket="rlkd-artifacts",
    credentials_secret="rlkd-s3-credentials",
)
DEFAULTS = OperatorDefaults(
    vllm_image="vllm/vllm-openai:v0.30.0",
    trainer_image="rlkd-trainer:test",
    storage=STORE,
    namespace="rlkd-system",
)

BASE: dict[str, Any] = {
    "apiVersion": "rlkd.ai/v1alpha1",
    "kind": "RLKDJob",
    "metadata": {"name": "demo", "namespace": "team-a"},
    "spec": {
        "student": {"model": "Qwen/Qwen2.5-Math-7B"},
        "dataset": {"uri": "store://datasets/math.jsonl"},
        "gsrm": {"model": "store://models/gsrm"},
        "judge": {"model": "Qwen/Qwen2.5-7B-Instruct"},
    },
}


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`base` with `patch` merged in, recursively (a None value deletes the key)."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def make_job(spec: dict[str, Any] | None = None, **metadata: Any) -> RLKDJob:
    """BASE with `spec` merged into its spec and `metadata` into its metadata."""
    return parse_job(merge(BASE, {"spec": spec or {}, "metadata": metadata}))
