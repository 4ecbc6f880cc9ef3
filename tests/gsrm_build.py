"""GSRM builds for tests: annotation shards written the way `rlkd annotate` writes them (the toy
domain's teacher reasoning, decomposed by the rule backend as an annotator would), an RLKDJob
whose spec.gsrm.build fine-tunes a tiny model for a few steps on the CPU, and a tiny base model
whose tokenizer knows the decomposition prompt (for builds that must learn the format)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from rlkd.build.records import write_shard
from rlkd.gsrm.prompts import decompose_messages, sft_record
from rlkd.gsrm.steps import format_steps, parse_steps
from rlkd.gsrm.types import DecomposeRequest
from rlkd.spec.progress import ANNOTATIONS_PREFIX
from rlkd.store.base import Store
from rlkd.toy import arithmetic
from rlkd.toy.model import CORPUS, build_model, train_tokenizer


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


def toy_decomposition(problem_text: str) -> str:
    """What an exact annotator answers for the scripted teacher's path of a toy problem: its
    steps in the canonical format."""
    problem = arithmetic.parse_problem(problem_text)
    return format_steps(parse_steps(arithmetic.reasoning(problem, problem.teacher_order)))


def build_base_model(path: Path) -> Path:
    """A tiny random Qwen2 (rlkd.toy.model) whose tokenizer has also learnt the toy domain's
    decomposition prompts: a prompt is then about 600 tokens instead of about 1000, which keeps
    an SFT step that learns the format short on a CPU."""
    texts = list(CORPUS)
    for problem in arithmetic.problems("train", 20, seed=1):
        reasoning = arithmetic.reasoning(problem, problem.teacher_order)
        request = DecomposeRequest(reasoning, problem.text, "math")
        texts += [m["content"] for m in decompose_messages(request)]
    return build_model(path, tokenizer=train_tokenizer(texts), checks=texts)


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
