"""GSRM builds for tests: annotation shards written the way `rlkd annotate` writes them (the toy
domain's teacher reasoning, decomposed by the rule backend as an annotator would), and an
RLKDJob whose spec.gsrm.build fine-tunes a tiny model for a few steps on the CPU."""

from __future__ import annotations

import copy
from typing import Any

from rlkd.build.records import write_shard
from rlkd.gsrm.prompts import sft_record
from rlkd.gsrm.steps import format_steps, parse_steps
from rlkd.gsrm.types import DecomposeRequest
from rlkd.spec.progress import ANNOTATIONS_PREFIX
from rlkd.store.base import Store
from rlkd.toy import arithmetic


def annotation(index: int, problem: arithmetic.Problem) -> dict[str, Any]:
    """One accepted annotation of a toy problem's teacher reasoning."""
    reasoning = arithmetic.reasoning(problem, problem.teacher_order)
    steps = parse_steps(reasoning)  # what the rule backend (an exact annotator) returns
    request = DecomposeRequest(reasoning, problem.text, "math")
    return {
        **sft_record(request, format_steps(steps)),
        "id": f"toy-{index:03d}",
        "domain": "math",
        "steps": [vars(step) for step in steps],
    }


def write_annotations(store: Store, count: int) -> list[dict[str, Any]]:
    """`count` annotations in two shards of the build's store (a SubStore at gsrm-build/)."""
    records = [annotation(i, p) for i, p in enumerate(arithmetic.problems("train", count))]
    half = count // 2
    write_shard(store, ANNOTATIONS_PREFIX, 0, records[:half])
    write_shard(store, ANNOTATIONS_PREFIX, 1, records[half:])
    return records


def build_job_document(name: str, base_model: str, **training: Any) -> dict[str, Any]:
    """An RLKDJob that builds its GSRM from `base_model` in `training.maxSteps` (default 4)
    tiny CPU steps, two annotations held out, into store://gsrm/<name>."""
    return {
        "apiVersion": "rlkd.ai/v1alpha1",
        "kind": "RLKDJob",
        "metadata": {"name": name, "namespace": "lab"},
        "spec": {
            "student": {"model": base_model},
            "dataset": {"uri": "toy://arithmetic"},
            "gsrm": {
                "model": f"store://gsrm/{name}",
                "backend": "transformers",
                "request": {"maxTokens": 8, "maxConcurrency": 4},
                "build": {
                    "baseModel": base_model,
                    "annotator": {
                        "backend": "openai",
                        "model": "annotator",
                        "url": "http://annotator.invalid/v1",
                    },
                    "heldOut": 2,
                    "training": {
                        "maxSteps": 4,
                        "saveSteps": 2,
                        "perDeviceTrainBatchSize": 2,
                        "gradientAccumulationSteps": 1,
                        "maxLength": 2048,
                        "precision": "fp32",
                        "gradientCheckpointing": False,
                        **training,
                    },
                },
            },
            "judge": {"backend": "rule"},
            "rollout": {"mode": "transformers"},
            "grpo": {"precision": "fp32"},
            "learner": {"gpusPerReplica": 0, "deepspeed": {"stage": 0}, "reportTo": []},
        },
    }


def with_build(document: dict[str, Any], **build: Any) -> dict[str, Any]:
    """`document` with spec.gsrm.build's fields replaced."""
    out = copy.deepcopy(document)
    out["spec"]["gsrm"]["build"] |= build
    return out
