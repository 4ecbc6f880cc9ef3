"""The progress document, kept by rank 0 in memory and flushed to the store by a small
background writer: a step or stage boundary writes it at once, an activity change at most every
`interval` seconds, so heartbeats cost no step any time and a hung learner still shows where it
hung."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from rlkd.spec.progress import (
    PROGRESS_KEY,
    Activity,
    EvaluationName,
    EvaluationSummary,
    ProgressDocument,
    Stage,
)
from rlkd.store.base import Store

log = logging.getLogger(__name__)
Say = Callable[[str], None]
"""How a recipe prints its one line per phase (`print`; `silent` on ranks other than 0)."""


def silent(_: str) -> None:
    """A `Say` that prints nothing."""


def now() -> str:
    """The time as the progress document and Kubernetes write it (RFC 3339, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProgressReporter:
    """The run's progress document. Every rank reads it; only rank 0 (`enabled`) writes."""

    def __init__(
        self,
        store: Store,
        *,
        enabled: bool = True,
        interval: float = 10.0,
        clock: Callable[[], str] = now,
    ) -> None:
        self.store = store
        self.enabled = enabled
        self.interval = interval
        self.clock = clock
        # Every rank reads it, so all take the same decisions from it (e.g. a finished run).
        self.doc = self._existing()
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.write_failures = 0

    def _existing(self) -> ProgressDocument:
        """A resumed run keeps what it had learnt (evaluations, counts, checkpoint)."""
        if not self.store.exists(PROGRESS_KEY):
            return ProgressDocument()
        raw = self.store.get_json(PROGRESS_KEY)
        doc = ProgressDocument.model_validate(raw, by_name=False)
        return doc.model_copy(update={"failure": None})

    # --- what the learner reports ------------------------------------------------------------

    def stage(self, stage: Stage, evaluating: EvaluationName | None = None) -> None:
        """A new stage began (the last one finished now)."""
        stamp = self.clock()
        heartbeat = self.doc.heartbeat.model_copy(
            update={"stage_finished_at": stamp, "activity": _activity_of(stage), "since": stamp}
        )
        self._update({"stage": stage, "evaluating": evaluating, "heartbeat": heartbeat}, now=True)

    def activity(self, activity: Activity) -> None:
        """What the learner does now (written within `interval`)."""
        if activity == self.doc.heartbeat.activity:
            return
        heartbeat = self.doc.heartbeat.model_copy(
            update={"activity": activity, "since": self.clock()}
        )
        self._update({"heartbeat": heartbeat})

    def step(
        self,
        step: int,
        total: int | None,
        *,
        rewards: Mapping[str, float] | None = None,
        mean_reward: float | None = None,
        errors: Mapping[str, int] | None = None,
    ) -> None:
        """An optimizer step finished (logged metrics with it, when it was a logging step)."""
        stamp = self.clock()
        update: dict[str, Any] = {
            "step": step,
            "total_steps": total,
            "updated_at": stamp,
            "heartbeat": self.doc.heartbeat.model_copy(update={"step_finished_at": stamp}),
        }
        if rewards is not None:
            update["rewards"] = dict(rewards)
        if mean_reward is not None:
            update["mean_reward"] = mean_reward
        if errors is not None:
            update["reward_errors"] = dict(errors)
        self._update(update, now=rewards is not None)

    def evaluation(self, name: EvaluationName, summary: EvaluationSummary) -> None:
        self._update({"evaluations": {**self.doc.evaluations, name: summary}}, now=True)

    def checkpoint(self, uri: str) -> None:
        self._update({"checkpoint": uri}, now=True)

    def finished(self, model: str) -> None:
        stamp = self.clock()
        heartbeat = self.doc.heartbeat.model_copy(
            update={"stage_finished_at": stamp, "activity": "idle", "since": stamp}
        )
        self._update(
            {"stage": "finished", "evaluating": None, "model": model, "heartbeat": heartbeat},
            now=True,
        )

    def failed(self, message: str) -> None:
        self._update({"failure": message[:4096]}, now=True)

    # --- writing -----------------------------------------------------------------------------

    def _update(self, fields: dict[str, Any], *, now: bool = False) -> None:
        with self._lock:
            self.doc = self.doc.model_copy(update=fields)
        if not self.enabled:
            return
        if now:
            self.flush()
        else:
            self._dirty.set()
            self._start()

    def flush(self) -> None:
        """Write the document now (stage changes, logging steps, the end)."""
        if not self.enabled:
            return
        with self._lock:
            body = self.doc.to_dict()
            self._dirty.clear()
        self.store.put_json(PROGRESS_KEY, body)

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="rlkd-progress", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._dirty.wait(timeout=1.0) and not self._stop.wait(self.interval):
                try:
                    self.flush()
                except Exception as error:  # a heartbeat must never kill training
                    self.write_failures += 1
                    log.warning("could not write the progress document: %s", error)

    def close(self) -> None:
        """Stop the writer, flushing what it had not written yet."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._dirty.is_set():
            try:
                self.flush()
            except Exception as error:
                log.warning("could not write the progress document: %s", error)


def _activity_of(stage: Stage) -> Activity:
    return {"preparing": "preparing", "evaluating": "evaluating", "finished": "idle"}.get(
        stage, "starting"
    )
