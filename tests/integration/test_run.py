"""`rlkd run`: bad input is one line naming the file or field and the fix (exit 1, no
traceback, nothing in the store damaged); a good run leaves the report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rlkd.cli import main
from rlkd.spec.yamlio import dump_all
from tests.learner import job_document, write_rows


def write_job(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(dump_all([document]))
    return path


def no_file(tmp_path: Path, model: Path) -> dict:
    return job_document("bad", str(model), str(tmp_path / "missing.jsonl"))


def empty(tmp_path: Path, model: Path) -> dict:
    (tmp_path / "empty.jsonl").write_text("")
    return job_document("bad", str(model), str(tmp_path / "empty.jsonl"))


def csv(tmp_path: Path, model: Path) -> dict:
    (tmp_path / "rows.csv").write_text("problem,answer\n1+1,2\n")
    return job_document("bad", str(model), str(tmp_path / "rows.csv"))


def no_teacher_column(tmp_path: Path, model: Path) -> dict:
    (tmp_path / "rows.jsonl").write_text((json.dumps({"problem": "1+1"}) + "\n") * 12)
    return job_document("bad", str(model), str(tmp_path / "rows.jsonl"))


def no_model(tmp_path: Path, model: Path) -> dict:
    (tmp_path / "empty-model").mkdir()
    rows = write_rows(tmp_path / "rows.jsonl")
    return job_document("bad", str(tmp_path / "empty-model"), str(rows))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (no_file, "no .jsonl or .parquet file at"),
        (empty, "spec.dataset.uri: the dataset at"),
        (csv, "unknown format; use .jsonl or .parquet"),
        (no_teacher_column, "has no column 'teacher_reasoning' (spec.dataset.columns.teacherRe"),
        (no_model, "spec.student.model: /"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    document: Callable[[Path, Path], dict],
    message: str,
) -> None:
    job = write_job(tmp_path, document(tmp_path, tiny_model))
    assert main(["run", str(job), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("rlkd run:")]
    assert len(lines) == 1, err


def test_another_jobs_output_is_refused_and_left_as_it_was(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"name": "someone-else", "recipe": "x"}))
    (out / "store").mkdir()
    (out / "store" / "precious").write_text("keep me")
    document = job_document("mine", str(tiny_model), str(write_rows(tmp_path / "rows.jsonl")))
    assert main(["run", str(write_job(tmp_path, document)), "--output", str(out)]) == 1
    assert "holds the run of job 'someone-else'" in capsys.readouterr().err
    assert (out / "store" / "precious").read_text() == "keep me"
    assert json.loads((out / "run.json").read_text())["name"] == "someone-else"
