"""The progress document and where a run keeps its artifacts: the seam between the learner
(which writes), the operator and `rlkd run` (which read).

Every key below is relative to the run's own store prefix, `<storage.prefix>/<namespace>/<name>/`
(see `run_prefix`), so the learner, the operator and the local runner agree on one layout.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from rlkd.spec.base import SpecModel
from rlkd.spec.status import Progress

PROGRESS_KEY = "progress.json"
"""The learner's progress document."""
CHECKPOINTS_PREFIX = "checkpoints/"
"""Checkpoints, one folder each (`checkpoints/checkpoint-<step>/`)."""
MODEL_PREFIX = "model/"
"""The final distilled student (a save_pretrained folder)."""
EVALUATION_KEY = "evaluation.json"
"""Greedy evaluation results with per-example rows (spec.evaluation): {"before": ..., "after":
...}."""
TENSORBOARD_PREFIX = "tensorboard/"
"""TensorBoard event files of the learner (spec.learner.reportTo)."""

Stage = Literal["preparing", "evaluating", "training", "finished"]
Activity = Literal[
    "starting",
    "preparing",
    "evaluating",
    "generating",
    "scoring",
    "updating",
    "syncing",
    "saving",
    "uploading",
    "idle",
]
"""What the learner is doing right now: a hung learner is found in the activity it stalled in."""
EvaluationName = Literal["before", "after"]

COMPLETE_MARKER = "COMPLETE"
"""Written last into a checkpoint's folder, once every node's files are in the store: only a
checkpoint that holds it is resumed from."""


def run_prefix(storage_prefix: str, namespace: str, name: str) -> str:
    """The store prefix that holds everything of one RLKDJob."""
    return f"{storage_prefix.strip('/')}/{namespace}/{name}"


class Heartbeat(SpecModel):
    """When the learner last finished something, and what it is doing now. Written by rank 0
    only when it writes the document anyway (a step or stage boundary), so it costs nothing
    extra; a reader judges staleness by its own clock."""

    activity: Activity = "starting"
    """What the learner is doing now."""
    since: str | None = None
    """When the current activity began (RFC 3339)."""
    step_finished_at: str | None = None
    """When the last optimizer step finished (RFC 3339)."""
    stage_finished_at: str | None = None
    """When the last stage (prepare, an evaluation, training) finished (RFC 3339)."""


class EvaluationSummary(SpecModel):
    """One greedy evaluation of a model (`rlkd eval`); per-example rows are in
    `evaluation.json`."""

    accuracy: float
    """Share of problems whose final answer math-verify marks correct."""
    structure: float | None = None
    """Mean structure alignment, 0..1: structure reward divided by the teacher's step count
    (None when the job has no structure reward)."""
    examples: Annotated[int, Field(ge=0)] = 0
    """Problems evaluated."""
    errors: dict[str, int] = Field(default_factory=dict)
    """Structure scores that could not be computed, by reason (left out of the mean)."""
    model: str | None = None
    """The model evaluated (a reference or store URI)."""


class ProgressDocument(Progress):
    """What the learner writes to `progress.json` after every logging step and at every stage
    change, from rank 0.

    `reward_errors` are cumulative and summed over every rank. `stage` is `finished` only once
    the final model (and the evaluation, when the spec asks for one) is in the store, so a
    reader that sees it can call the run done.
    """

    stage: Stage = "training"
    """preparing, evaluating (spec.evaluation), training or finished (artifacts uploaded)."""
    evaluating: EvaluationName | None = None
    """Which evaluation runs while stage is evaluating: before or after training."""
    checkpoint: str | None = Field(default=None, max_length=4096)
    """Store URI of the newest complete checkpoint (one that holds the COMPLETE marker)."""
    model: str | None = Field(default=None, max_length=4096)
    """Store URI of the final model (set when stage is finished)."""
    evaluations: dict[EvaluationName, EvaluationSummary] = Field(default_factory=dict)
    """Greedy evaluation results: before (spec.evaluation.baseline) and after training."""
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    """The learner's liveness: last finished step and stage, current activity."""
    failure: str | None = Field(default=None, max_length=4096)
    """Why the learner stopped, when it stopped on an error of its own (one line)."""
