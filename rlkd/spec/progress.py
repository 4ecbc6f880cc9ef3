"""The progress document and where a run keeps its artifacts: the seam between the learner
(which writes), the operator and `rlkd run` (which read).

Every key below is relative to the run's own store prefix, `<storage.prefix>/<namespace>/<name>/`
(see `run_prefix`), so the learner, the operator and the local runner agree on one layout.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from rlkd.spec.status import Progress

PROGRESS_KEY = "progress.json"
"""The learner's progress document."""
CHECKPOINTS_PREFIX = "checkpoints/"
"""Checkpoints, one folder each (`checkpoints/checkpoint-<step>/`)."""
MODEL_PREFIX = "model/"
"""The final distilled student (a save_pretrained folder)."""
EVALUATION_KEY = "evaluation.json"
"""Greedy evaluation results (spec.evaluation)."""

Stage = Literal["training", "evaluating", "finished"]


def run_prefix(storage_prefix: str, namespace: str, name: str) -> str:
    """The store prefix that holds everything of one RLKDJob."""
    return f"{storage_prefix.strip('/')}/{namespace}/{name}"


class ProgressDocument(Progress):
    """What the learner writes to `progress.json` every logging step and at every stage change.

    `stage` is `finished` only once the final model (and the evaluation, when the spec asks for
    one) is in the store, so a reader that sees it can call the run done.
    """

    stage: Stage = "training"
    """training, evaluating (spec.evaluation) or finished (artifacts uploaded)."""
    checkpoint: str | None = Field(default=None, max_length=4096)
    """Store URI of the latest checkpoint."""
    model: str | None = Field(default=None, max_length=4096)
    """Store URI of the final model (set when stage is finished)."""
    evaluation: dict[str, float] = Field(default_factory=dict)
    """Evaluation metrics, e.g. {"accuracy": 0.41} (set when stage is finished)."""
