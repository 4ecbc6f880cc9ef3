"""A GSRM build (spec.gsrm.build) as the operator reads it from the store: the build's own
progress document, whether the built model is at gsrm.model, and the reports of `rlkd annotate`
(annotate.json) and `rlkd eval-gsrm` (evaluation.json) that a failure message quotes. Pure, like
decide; rlkd_operator.stores reads what it holds.

The reports are the build commands' own documents: the operator quotes their top-level numbers
and words (counts, rates, the gate's verdict) without holding a schema of them, so a report that
gains a field needs no operator change, and one it cannot read costs only the quote.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlkd.spec.progress import ProgressDocument

QUOTE_LIMIT = 600
"""Characters of one report quoted in a status message (its per-path rows never are)."""


@dataclass(frozen=True)
class GSRMBuildSeen:
    """What one look at a job's store found of its GSRM build. `progress` None: no build has
    written its progress document yet. `annotate` and `evaluation` are read only when a build
    step failed (None: absent, or not read)."""

    progress: ProgressDocument | None = None
    model_present: bool = False
    """gsrm.model holds files (looked at only once the progress says finished)."""
    annotate: Mapping[str, Any] | None = None
    evaluation: Mapping[str, Any] | None = None

    @property
    def built(self) -> bool:
        """The build finished without a failure of its own, and the model is where gsrm.model
        says: the run can start on it, and no build runs again."""
        doc = self.progress
        return (
            doc is not None and doc.stage == "finished" and not doc.failure and self.model_present
        )

    def step(self) -> str:
        """Where the build's training is, in words, for the phase message."""
        doc = self.progress
        if doc is None:
            return "starting"
        if doc.stage != "training":
            return doc.stage
        total = f"/{doc.total_steps}" if doc.total_steps else ""
        return f"training, step {doc.step}{total}"


def quote(name: str, report: Mapping[str, Any] | None) -> str:
    """`report` in one line for a status message: its top-level numbers, flags and words, and
    those of its top-level objects (counts by reason), never its lists (per-path rows); bounded
    by QUOTE_LIMIT. Empty when there is no report."""
    if report is None:
        return ""
    parts = []
    for key, value in report.items():
        if isinstance(value, Mapping):
            inner = [f"{k} {_scalar(v)}" for k, v in value.items() if _scalar(v) is not None]
            if inner:
                parts.append(f"{key} {{{', '.join(inner)}}}")
        elif (text := _scalar(value)) is not None:
            parts.append(f"{key} {text}")
    line = ", ".join(parts) or "no counts"
    if len(line) > QUOTE_LIMIT:
        line = line[: QUOTE_LIMIT - 3] + "..."
    return f"{name}: {line}"


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return None
