"""The main job, shortened through its spec: `rlkd run manifests/examples/tiny-cpu.yaml` builds
the toy student and problems on first use, trains, evaluates before and after, and reports; a
rerun with the same output resumes (here: finds the run finished)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rlkd.spec.validate import load_job
from rlkd.spec.yamlio import dump_all
from rlkd.toy import TOY_SYSTEM_PROMPT

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "tiny-cpu.yaml"


def test_the_example_prompts_as_the_toy_student_was_taught() -> None:
    assert load_job(EXAMPLE).spec.grpo.system_prompt == TOY_SYSTEM_PROMPT


def test_the_tiny_example_runs_end_to_end_and_reports(tmp_path: Path) -> None:
    body = load_job(EXAMPLE).to_dict()
    body["spec"]["grpo"] |= {"maxSteps": 4, "saveSteps": 2}
    body["spec"]["dataset"]["limit"] = 8
    body["spec"]["evaluation"]["limit"] = 8
    job = tmp_path / "tiny.yaml"
    job.write_text(dump_all([body]))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rlkd.cli", "run", str(job), "--output", str(out)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for phase in ("prepare:", "evaluate before:", "train: GRPO on", "evaluate after:", "summary:"):
        assert phase in first.stdout, phase
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 4 and report["seconds"] > 0
    for name in ("before", "after"):
        assert 0 <= report[name]["accuracy"] <= 1 and 0 <= report[name]["structure"] <= 1
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "structure alignment" in (out / "report.md").read_text()
    store = out / "store" / "default" / "tiny-arithmetic"
    assert (store / "model" / "config.json").is_file()
    assert (store / "checkpoints" / "checkpoint-4" / "COMPLETE").is_file()
    assert any((store / "tensorboard").rglob("events.out.tfevents.*"))

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already finished" in again.stdout
