"""What `rlkd train` costs beyond TRL itself: the same GRPO run, once as a plain TRL script
(GRPOTrainer with the same config, rows and reward functions, saving checkpoints locally) and once
through `rlkd train` (prepare, the progress document, checkpoint uploads to the store, the final
model upload), on two students: the tiny one and one about 20x larger, where fixed per-step costs
show as what they are.

    .venv/bin/python benchmarks/learner_overhead.py [--steps 30] [--repeats 2]

Both runs of a pair start from the same random weights and seed; each is timed end to end (model
loading included), the fastest of `--repeats` counts. CPU only, evaluation off (it is extra work,
not overhead). The last line is exactly: learner overhead vs plain TRL: X%
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from rlkd.job_rewards import build_rewards
from rlkd.spec.resource import RLKDJob
from rlkd.spec.validate import parse_job
from rlkd.store.job import local_stores
from rlkd.toy import toy_records
from rlkd.toy.model import Shape, build_model, train_tokenizer
from rlkd.toy.student import TOY_SYSTEM_PROMPT, Recipe, tokenizer_corpus
from rlkd.train.config import Placement, grpo_config
from rlkd.train.data import chat_token_counter, prompt_rows
from rlkd.train.recipe import train

STUDENTS = {
    "tiny (hidden 128, 2 layers)": Shape(hidden=128, intermediate=256, layers=2, heads=4),
    "larger (hidden 512, 8 layers)": Shape(
        hidden=512, intermediate=1024, layers=8, heads=8, kv_heads=8
    ),
}


def job(student: Path, dataset: Path, steps: int) -> RLKDJob:
    return parse_job(
        {
            "apiVersion": "rlkd.ai/v1alpha1",
            "kind": "RLKDJob",
            "metadata": {"name": "overhead", "namespace": "bench"},
            "spec": {
                "student": {"model": str(student)},
                "dataset": {"uri": str(dataset)},
                "gsrm": {"backend": "rule"},
                "judge": {"backend": "rule"},
                "grpo": {
                    "learningRate": 1e-4,
                    "numGenerations": 4,
                    "perDeviceTrainBatchSize": 8,
                    "gradientAccumulationSteps": 1,
                    "maxPromptLength": 128,
                    "maxCompletionLength": 96,
                    "temperature": 1.0,
                    "maxSteps": steps,
                    "saveSteps": 10,
                    "precision": "fp32",
                    "gradientCheckpointing": False,
                    "systemPrompt": TOY_SYSTEM_PROMPT,
                },
                "rollout": {"mode": "transformers"},
                "learner": {"gpusPerReplica": 0, "deepspeed": {"stage": 0}, "reportTo": []},
            },
        }
    )


def plain_trl(rlkd_job: RLKDJob, workdir: Path) -> float:
    """The run a user would write by hand with TRL: same config, rows, rewards."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    start = time.perf_counter()
    spec = rlkd_job.spec
    rewards = build_rewards(spec, None)
    config = grpo_config(
        spec, Placement(output_dir=str(workdir / "out"), cuda=False), reward_weights=rewards.weights
    )
    tokenizer = AutoTokenizer.from_pretrained(spec.student.model)
    records = [json.loads(line) for line in Path(spec.dataset.uri).read_text().splitlines()]
    rows = prompt_rows(spec, records, chat_token_counter(tokenizer))
    trainer = GRPOTrainer(
        model=spec.student.model,
        reward_funcs=rewards.functions,
        args=config,
        train_dataset=Dataset.from_list(rows.rows),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(workdir / "model"))
    rewards.close()
    return time.perf_counter() - start


def through_rlkd(rlkd_job: RLKDJob, workdir: Path) -> float:
    start = time.perf_counter()
    stores = local_stores(rlkd_job, workdir / "store")
    train(rlkd_job, stores, workdir=workdir / "work", say=lambda _: None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = root / "arithmetic.jsonl"
        records = toy_records("arithmetic", None)[:256]
        dataset.write_text("".join(json.dumps(r) + "\n" for r in records))
        corpus = tokenizer_corpus(Recipe())
        tokenizer = train_tokenizer(corpus)
        for label, shape in STUDENTS.items():
            student = build_model(root / label.split()[0], tokenizer=tokenizer, shape=shape)
            params = AutoModelForCausalLM.from_pretrained(student).num_parameters()
            rlkd_job = job(student, dataset, args.steps)
            plain, ours = [], []
            for repeat in range(args.repeats):
                plain.append(plain_trl(rlkd_job, root / f"plain-{label[:4]}-{repeat}"))
                ours.append(through_rlkd(rlkd_job, root / f"rlkd-{label[:4]}-{repeat}"))
            best_plain, best_ours = min(plain), min(ours)
            rows.append(
                {
                    "student": label,
                    "params": params,
                    "plain": best_plain,
                    "rlkd": best_ours,
                    "overhead": 100 * (best_ours - best_plain) / best_plain,
                }
            )
            print(
                f"{label}: {params / 1e6:.2f}M params, plain TRL {best_plain:.1f} s, "
                f"rlkd train {best_ours:.1f} s ({args.steps} steps)",
                flush=True,
            )
    print()
    print("| student | parameters | plain TRL (s) | rlkd train (s) | overhead |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['student']} | {row['params'] / 1e6:.2f}M | {row['plain']:.1f} | "
            f"{row['rlkd']:.1f} | {row['overhead']:+.1f}% |"
        )
    print(f"learner overhead vs plain TRL: {rows[-1]['overhead']:.1f}%")


if __name__ == "__main__":
    main()
