"""Small learner runs for tests: a tiny random student, a few rule-scored examples, and an
RLKDJob that trains a handful of steps on the CPU."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ROWS = [
    {
        "problem": f"What is {a} + {b}?",
        "answer": str(a + b),
        "teacher_reasoning": (
            f"[Meta-reasoning 1]: add\n[Sub-problem 1]: {a}+{b}\n[Answer 1]: {a + b}"
        ),
    }
    for a in range(1, 7)
    for b in range(2, 6)
]


def write_rows(path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def job_document(name: str, student: str, dataset: str, **grpo: Any) -> dict[str, Any]:
    """A CPU job of `grpo.maxSteps` (default 4) tiny steps, evaluated before and after."""
    return {
        "apiVersion": "rlkd.ai/v1alpha1",
        "kind": "RLKDJob",
        "metadata": {"name": name, "namespace": "lab"},
        "spec": {
            "student": {"model": student},
            "dataset": {"uri": dataset, "limit": 8},
            "gsrm": {"backend": "rule"},
            "judge": {"backend": "rule"},
            "grpo": {
                "learningRate": 1e-4,
                "numGenerations": 4,
                "perDeviceTrainBatchSize": 4,
                "gradientAccumulationSteps": 1,
                "maxPromptLength": 256,
                "maxCompletionLength": 16,
                "maxSteps": 4,
                "saveSteps": 2,
                "precision": "fp32",
                "gradientCheckpointing": False,
                **grpo,
            },
            "rollout": {"mode": "transformers"},
            "evaluation": {"limit": 4},
            "learner": {"gpusPerReplica": 0, "deepspeed": {"stage": 0}, "reportTo": []},
        },
    }


def with_spec(document: dict[str, Any], **spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(document)
    for key, value in spec.items():
        out["spec"][key] = {**out["spec"].get(key, {}), **value}
    return out
