"""The progress document the learner writes: stages, steps, heartbeats, resumption."""

from __future__ import annotations

import itertools
from pathlib import Path

from rlkd.spec.progress import PROGRESS_KEY, EvaluationSummary, ProgressDocument
from rlkd.store import LocalStore
from rlkd.train.progress import ProgressReporter


def clock() -> callable:
    ticks = itertools.count()
    return lambda: f"2026-12-02T10:00:{next(ticks):02d}Z"


def read(store: LocalStore) -> ProgressDocument:
    return ProgressDocument.model_validate(store.get_json(PROGRESS_KEY), by_name=False)


def test_stages_and_logging_steps_are_written_at_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    progress = ProgressReporter(store, clock=clock())
    progress.stage("evaluating", "before")
    doc = read(store)
    assert (doc.stage, doc.evaluating, doc.heartbeat.activity) == (
        "evaluating",
        "before",
        "evaluating",
    )
    progress.evaluation("before", EvaluationSummary(accuracy=0.5, structure=0.25, examples=8))
    progress.stage("training")
    progress.step(3, 20, rewards={"accuracy": 0.5}, mean_reward=7.5, errors={"timeout": 2})
    doc = read(store)
    assert (doc.step, doc.total_steps, doc.mean_reward) == (3, 20, 7.5)
    assert doc.reward_errors == {"timeout": 2} and doc.rewards == {"accuracy": 0.5}
    assert doc.evaluations["before"].structure == 0.25
    assert doc.heartbeat.step_finished_at is not None
    progress.finished("file:///m/model")
    doc = read(store)
    assert (doc.stage, doc.model, doc.heartbeat.activity) == ("finished", "file:///m/model", "idle")
    progress.close()


def test_activity_changes_are_written_by_the_background_writer(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    progress = ProgressReporter(store, interval=3600)
    progress.stage("training")
    progress.activity("generating")
    assert read(store).heartbeat.activity == "starting"  # not yet: no write on the hot path
    progress.close()  # closing flushes what is pending
    assert read(store).heartbeat.activity == "generating"


def test_a_resumed_run_keeps_what_it_knew_and_clears_an_old_failure(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = ProgressReporter(store)
    first.evaluation("before", EvaluationSummary(accuracy=0.1))
    first.failed("StoreError: unreachable")
    first.close()
    again = ProgressReporter(store)
    assert "before" in again.doc.evaluations and again.doc.failure is None


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    progress = ProgressReporter(store, enabled=False)
    progress.stage("training")
    progress.step(1, 2, rewards={})
    progress.close()
    assert not store.exists(PROGRESS_KEY)
