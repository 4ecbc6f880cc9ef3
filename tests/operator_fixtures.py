"""RLKDJob bodies, child states and store reports shared by the operator's unit, scenario and
benchmark code."""

from __future__ import annotations

import copy
from typing import Any

from rlkd.k8s.learner import PyTorchJobCondition
from rlkd.spec.progress import GSRMEvaluation

STORAGE = {"endpoint": "http://127.0.0.1:9", "bucket": "rlkd-test", "credentialsSecret": "store"}

SPEC: dict[str, Any] = {
    "student": {"model": "store://models/student"},
    "dataset": {"uri": "store://datasets/train.jsonl", "limit": 64},
    "gsrm": {"model": "store://models/gsrm", "vllm": {"resources": {"cpu": "1"}}},
    "judge": {"model": "store://models/judge"},
    # The dataset carries the decompositions: no prepare Job (the prepare scenarios set a teacher).
    "teacher": {"source": "decompositions"},
    "grpo": {"precision": "fp32", "maxSteps": 20},
    "rollout": {"mode": "transformers"},
    "learner": {"gpusPerReplica": 0},
    "storage": STORAGE,
}


def job_body(name: str = "demo", namespace: str = "ns1", **spec: Any) -> dict[str, Any]:
    """An RLKDJob as the API server returns it (two vLLM inference roles: gsrm and judge)."""
    return {
        "apiVersion": "rlkd.ai/v1alpha1",
        "kind": "RLKDJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "generation": 1,
            "resourceVersion": "1",
        },
        "spec": {**copy.deepcopy(SPEC), **spec},
    }


def available(deployment: dict[str, Any]) -> dict[str, Any]:
    """`deployment` as the Deployment controller reports it once it has seen its spec and all
    its replicas are ready (at zero replicas too: Available=True, nothing available)."""
    replicas = deployment["spec"].get("replicas", 1)
    status = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}
        ],
    }
    return {**deployment, "status": status}


def pytorchjob_in(pytorchjob: dict[str, Any], state: str, message: str = "") -> dict[str, Any]:
    """`pytorchjob` as the training operator reports it in `state` (Running, Succeeded, ...)."""
    condition = PyTorchJobCondition(state)
    created = PyTorchJobCondition.CREATED
    conditions = [{"type": str(created), "status": "True", "reason": f"PyTorchJob{created}"}]
    if condition != created:
        reason = f"PyTorchJob{condition}"
        conditions.append(
            {"type": str(condition), "status": "True", "reason": reason, "message": message}
        )
    status: dict[str, Any] = {"conditions": conditions}
    if condition in (PyTorchJobCondition.SUCCEEDED, PyTorchJobCondition.FAILED):
        status["completionTime"] = "2026-01-01T10:00:00Z"
    return {**pytorchjob, "status": status}


MISSED_GATE = GSRMEvaluation(
    model="store://models/gsrm-built",
    examples=64,
    parse_rate=0.42,
    step_count_agreement=0.25,
    step_agreement=None,
    passed=False,
    gate_failures=["parse rate 0.420 is below 0.9 (spec.gsrm.build.gate.minParseRate)"],
)
"""eval-gsrm's report of a built GSRM that misses the default gate (what a failure quotes)."""
