"""The README's example and its claimed output are real: they go through `rlkd validate`."""

from __future__ import annotations

import re
from pathlib import Path

from rlkd.spec.validate import check_file

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_example_is_valid(tmp_path: Path) -> None:
    [example] = re.findall(r"```yaml\n(.*?)```", README, re.S)
    path = tmp_path / "job.yaml"
    path.write_text(example)
    jobs, problems = check_file(path)
    assert problems == []
    assert jobs[0].spec.dataset.fraction == 0.001


def test_readme_validate_output_is_what_rlkd_prints(tmp_path: Path) -> None:
    [shown] = re.findall(r"\$ rlkd validate job.yaml\n(.*?)```", README, re.S)
    [example] = re.findall(r"```yaml\n(.*?)```", README, re.S)
    broken = example.replace("learningRate: 5e-5", "learningRate: -1e-5, learningrate: 1")
    broken = re.sub(r"  judge:\n.*\n", "", broken)
    path = tmp_path / "job.yaml"
    path.write_text(broken)
    _, problems = check_file(path)
    assert [p.replace(str(path), "job.yaml") for p in problems] == shown.strip().splitlines()


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == "make test"
    assert re.search(r"^make test\s", README, re.M)
