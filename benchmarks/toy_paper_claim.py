"""The paper's claim in miniature, on the shipped toy domain: does rewarding the teacher's
structure transfer it better than rewarding the answer alone?

Three arms on held-out problems (toy://arithmetic-test), greedy:
  - the SFT-warmed student (toy://tiny-student: correct reasoning in random orders);
  - + GRPO with the accuracy reward only;
  - + RLKD: GRPO with accuracy and the structure reward (rule GSRM and judge).
Both GRPO arms take the same steps, from the same student, for each of `--seeds` training seeds;
the table gives the mean and the spread (min..max) of accuracy and structure alignment.

    .venv/bin/python benchmarks/toy_paper_claim.py [--seeds 3] [--steps N] [--out FILE]

Everything else is the tiny example's recipe (manifests/examples/tiny-cpu.yaml).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlkd.data import evaluation_records
from rlkd.models import local_model
from rlkd.spec.progress import PROGRESS_KEY
from rlkd.spec.validate import load_job, parse_job
from rlkd.store.job import local_stores
from rlkd.train.recipe import run_evaluation, train

EXAMPLE = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "tiny-cpu.yaml"
ARMS = {
    "+ GRPO, accuracy only": {"accuracy": 15.0, "format": 0.0, "tagCount": 0.0, "structure": 0.0},
    "+ RLKD (accuracy + structure)": {
        "accuracy": 15.0,
        "format": 0.0,
        "tagCount": 0.0,
        "structure": 15.0,
    },
}


def variant(
    base: dict[str, Any], name: str, rewards: dict[str, float], seed: int, steps: int | None
) -> Any:
    body = {**base, "metadata": {"name": name}}
    spec = dict(body["spec"])
    spec["rewards"] = rewards
    grpo = dict(spec["grpo"], seed=seed)
    if steps:
        grpo["maxSteps"] = steps
    spec["grpo"] = grpo
    spec["evaluation"] = {**spec.get("evaluation", {}), "baseline": False}
    body["spec"] = spec
    return parse_job(body)


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}..{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="default: the tiny example's")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    example = load_job(EXAMPLE)
    base = example.to_dict()
    results: dict[str, list[tuple[float, float]]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stores = local_stores(example, root / "store")
        # The SFT-warmed student, evaluated once: it is the same for every seed.
        student = local_model(example.spec.student.model, stores, root / "cache", field="student")
        records = evaluation_records(example.spec, stores, example.spec.evaluation)
        before = run_evaluation(example, stores, records, student, example.spec.student.model)
        results["SFT-warmed student"] = [(before.summary.accuracy, before.summary.structure or 0)]
        print(f"SFT-warmed student: {results['SFT-warmed student'][0]}", flush=True)
        for arm, rewards in ARMS.items():
            for seed in range(args.seeds):
                name = f"arm-{len(results)}-seed-{seed}"
                job = variant(base, name, rewards, seed, args.steps)
                arm_stores = local_stores(job, root / "store")
                train(job, arm_stores, workdir=root / name, say=lambda _: None)
                after = arm_stores.run.get_json(PROGRESS_KEY)["evaluations"]["after"]
                results.setdefault(arm, []).append((after["accuracy"], after.get("structure") or 0))
                print(f"{arm}, seed {seed}: {results[arm][-1]}", flush=True)
    steps = args.steps or example.spec.grpo.max_steps
    lines = [
        f"Held-out toy problems ({len(records)}), greedy; {steps} GRPO steps per run, "
        f"{args.seeds} seeds; mean (min..max). Wall time {time.monotonic() - started:.0f} s.",
        "",
        "| arm | accuracy | structure alignment |",
        "| --- | --- | --- |",
    ]
    for arm, values in results.items():
        accuracy, structure = zip(*values, strict=True)
        lines.append(f"| {arm} | {spread(list(accuracy))} | {spread(list(structure))} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    best = max(ARMS, key=lambda arm: statistics.fmean(s for _, s in results[arm]))
    print(f"highest structure alignment: {best}")


if __name__ == "__main__":
    main()
