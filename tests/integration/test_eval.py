"""The evaluation measures both numbers whatever the rewards' weights: an accuracy-only run is
compared with an RLKD run on accuracy and structure alignment alike."""

from __future__ import annotations

import json
from pathlib import Path

from rlkd.spec.validate import parse_job
from rlkd.store.job import local_stores
from rlkd.train.recipe import run_evaluation
from tests.learner import job_document, with_spec, write_rows


def test_an_accuracy_only_job_still_measures_structure_alignment(
    tmp_path: Path, tiny_model: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl")
    document = job_document("accuracy-only", str(tiny_model), str(rows))
    job = parse_job(
        with_spec(document, rewards={"accuracy": 1.0, "format": 0, "tagCount": 0, "structure": 0})
    )
    records = [json.loads(line) for line in rows.read_text().splitlines()][:4]

    evaluation = run_evaluation(
        job, local_stores(job, tmp_path / "store"), records, str(tiny_model), "student"
    )

    assert evaluation.summary.examples == 4
    assert evaluation.summary.structure is not None  # the tiny random model scores ~0
    assert 0.0 <= evaluation.summary.structure <= 1.0
