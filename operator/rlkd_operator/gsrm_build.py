"""A GSRM build (spec.gsrm.build) as the operator reads it from the store: the build's own
progress document, whether the built model is at gsrm.model, and the reports of `rlkd annotate`
(annotate.json) and `rlkd eval-gsrm` (evaluation.json) that a failure message quotes, typed as
the commands write them (rlkd.spec.progress). Pure, like decide; rlkd_operator.stores reads what
it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlkd.spec.progress import (
    ANNOTATE_KEY,
    GSRM_EVALUATION_KEY,
    AnnotateSummary,
    GSRMEvaluation,
    ProgressDocument,
    gsrm_built,
)


@dataclass(frozen=True)
class GSRMBuildSeen:
    """What one look at a job's store found of its GSRM build. `progress` None: no build has
    written its progress document yet. `annotate` and `evaluation` are read only when a build
    step failed (None: absent, or not read)."""

    progress: ProgressDocument | None = None
    model_present: bool = False
    """A whole model is at gsrm.model (rlkd.models.model_stored; looked at only once the progress
    says finished)."""
    annotate: AnnotateSummary | None = None
    evaluation: GSRMEvaluation | None = None

    @property
    def built(self) -> bool:
        """The build finished without a failure of its own, and the model is where gsrm.model
        says: the run can start on it, and no build runs again."""
        return gsrm_built(self.progress) and self.model_present

    def step(self) -> str:
        """Where the build's training is, in words, for the phase message."""
        doc = self.progress
        if doc is None:
            return "starting"
        if doc.stage != "training":
            return doc.stage
        total = f"/{doc.total_steps}" if doc.total_steps else ""
        return f"training, step {doc.step}{total}"

    def annotate_line(self) -> str:
        """annotate.json's counts for a status message; empty without it."""
        return f"{ANNOTATE_KEY}: {self.annotate.counts()}" if self.annotate else ""

    def evaluation_line(self) -> str:
        """evaluation.json's numbers and verdict for a status message; empty without it."""
        return f"{GSRM_EVALUATION_KEY}: {self.evaluation.verdict()}" if self.evaluation else ""
