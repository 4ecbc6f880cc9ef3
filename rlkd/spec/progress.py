"""The progress document and where a run keeps its artifacts: the seam between the learner
(which writes), the operator and `rlkd run` (which read).

Every key below is relative to the run's own store prefix, `<storage.prefix>/<namespace>/<name>/`
(see `run_prefix`), so the learner, the operator and the local runner agree on one layout.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field

from rlkd.spec.base import SpecModel
from rlkd.spec.job import LearnerSpec, RLKDJobSpec
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
PREPARE_KEY = "prepare.json"
"""What `rlkd prepare` did (PrepareSummary): the operator reads it when the prepare Job fails,
the learner to skip a prepare that finished."""

GSRM_BUILD_PREFIX = "gsrm-build/"
"""A GSRM build (spec.gsrm.build), apart from the RLKD run's own keys. Below it, the build keeps
its own PROGRESS_KEY and CHECKPOINTS_PREFIX (the same learner machinery, on a sub-store), and:"""
ANNOTATIONS_PREFIX = "annotations/"
"""`rlkd annotate`'s accepted SFT records, JSON Lines shards (`annotations/shard-<n>.jsonl`);
each line is `rlkd.gsrm.prompts.sft_record` plus its example id (`id`)."""
ANNOTATE_KEY = "annotate.json"
"""What `rlkd annotate` did: accepted / rejected / failed counts with reasons (AnnotateSummary)."""
GSRM_EVALUATION_KEY = "evaluation.json"
"""`rlkd eval-gsrm`'s report: parse rate, step-count and per-step agreement, the gate's verdict."""

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


def nothing_to_prepare(spec: RLKDJobSpec) -> str | None:
    """Why the job has no teacher side to compute before training, or None when it has: paths
    to sample (teacher.source model) or decompositions to compute with the GSRM. The one rule
    for `rlkd prepare`, the learner and the operator (whether a prepare Job runs at all)."""
    if spec.teacher.source == "decompositions":
        return "teacher.source is decompositions: the dataset carries them"
    if spec.teacher.source == "model" or needs_decompositions(spec):
        return None  # a teacher model's paths are sampled, whatever rewards use them
    return "rewards.structure is 0"


def gate_judges(spec: RLKDJobSpec) -> bool:
    """Whether `rlkd eval-gsrm` asks the judge for per-step agreement: the build's gate asks for
    it (gsrm.build.gate.minStepAgreement > 0) and the spec names a judge. The one rule for
    eval-gsrm and for the operator, which serves a vllm judge to the build exactly then."""
    build = spec.gsrm.build if spec.gsrm is not None else None
    return build is not None and spec.judge is not None and build.gate.min_step_agreement > 0


def needs_prepare(spec: RLKDJobSpec) -> bool:
    """Whether `rlkd prepare` has anything to do for this job (see nothing_to_prepare)."""
    return nothing_to_prepare(spec) is None


def needs_decompositions(spec: RLKDJobSpec) -> bool:
    """Whether prepare decomposes the teacher's paths with the GSRM (the structure reward is on
    and the dataset does not carry them)."""
    return (
        spec.teacher.source != "decompositions" and spec.rewards.structure > 0 and bool(spec.gsrm)
    )


class PrepareSummary(SpecModel):
    """What `rlkd prepare` writes to `prepare.json`: written with `finished` false when it starts
    and again when it ends, so a reader never takes an earlier run's counts for this one's."""

    finished: bool = False
    """The prepare ran to its end (with or without failures)."""
    examples: Annotated[int, Field(ge=0)] = 0
    """Distinct examples that training and evaluation use."""
    sampled: Annotated[int, Field(ge=0)] = 0
    """Teacher paths sampled by this run (teacher.source model)."""
    kept: Annotated[int, Field(ge=0)] = 0
    """Examples whose teacher path is usable (teacher.source model: its answer is correct)."""
    dropped: Annotated[int, Field(ge=0)] = 0
    """Examples left out: the teacher's path has a wrong answer (teacher.source model)."""
    decomposed: Annotated[int, Field(ge=0)] = 0
    """Teacher decompositions computed by this run with the GSRM."""
    cached: Annotated[int, Field(ge=0)] = 0
    """Teacher paths and decompositions already in the store from an earlier run."""
    failures: dict[str, int] = Field(default_factory=dict)
    """Paths and decompositions that failed, by reason: not cached, tried again next time."""

    @property
    def complete(self) -> bool:
        """Finished with nothing left to compute: the learner need not prepare again."""
        return self.finished and not self.failures

    def counts(self) -> str:
        """The counts in one line, for a status message or a log."""
        numbers = {
            "examples": self.examples,
            "sampled": self.sampled,
            "kept": self.kept,
            "dropped": self.dropped,
            "decomposed": self.decomposed,
            "cached": self.cached,
        }
        line = ", ".join(f"{k} {v}" for k, v in numbers.items())
        failed = ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items()))
        return line + (f"; failed: {failed}" if failed else "")


class AnnotateSummary(SpecModel):
    """What `rlkd annotate` writes to `gsrm-build/annotate.json`: written with `finished` false
    when it starts and again when it ends, like PrepareSummary. Accepted and rejected paths are
    results (kept in the store, skipped by a rerun); failed ones are not, and the next run tries
    them again."""

    finished: bool = False
    """The annotation ran to its end (with or without failures)."""
    paths: Annotated[int, Field(ge=0)] = 0
    """Distinct teacher paths selected (spec.dataset's selection, at most gsrm.build.limit)."""
    skipped: Annotated[int, Field(ge=0)] = 0
    """Paths accepted or rejected by an earlier run."""
    accepted: Annotated[int, Field(ge=0)] = 0
    """Paths this run decomposed into well-formed steps (SFT records in annotations/)."""
    rejected: Annotated[int, Field(ge=0)] = 0
    """Paths whose decomposition stayed malformed after the reminder (in rejected/, with why)."""
    reminded: Annotated[int, Field(ge=0)] = 0
    """Paths whose first reply was malformed and that were asked again with a reminder."""
    rejections: dict[str, int] = Field(default_factory=dict)
    """Rejected paths by reason (no_steps, missing_parts, token_limit, empty_path)."""
    failures: dict[str, int] = Field(default_factory=dict)
    """Paths the annotator did not answer, by reason (timeout, rate_limited, ...): not stored,
    tried again next time."""

    @property
    def complete(self) -> bool:
        """Finished with every selected path accepted or rejected."""
        return self.finished and not self.failures

    def counts(self) -> str:
        """The counts in one line, for a status message or a log."""
        line = (
            f"{self.paths} paths: accepted {self.accepted}, rejected {self.rejected}, "
            f"failed {sum(self.failures.values())}, done before {self.skipped}"
        )
        for label, reasons in (("rejected", self.rejections), ("failed", self.failures)):
            if reasons:
                line += f"; {label}: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
        return line


class GSRMEvaluationRow(SpecModel):
    """One held-out annotation as `rlkd eval-gsrm` graded the built GSRM on it."""

    id: str
    """The example's id (the annotation record's)."""
    annotator_steps: Annotated[int, Field(ge=0)]
    """Steps in the annotator's decomposition."""
    gsrm_steps: Annotated[int, Field(ge=0)]
    """Steps the GSRM wrote (0 when its reply has none or failed)."""
    agreed_steps: Annotated[int, Field(ge=0)] | None = None
    """Steps whose sub-problem the judge found the same as the annotator's (None: not judged)."""
    error: str | None = None
    """Why the GSRM gave no decomposition, or the judge no verdict (a failure reason)."""


class GSRMEvaluation(SpecModel):
    """`rlkd eval-gsrm`'s report (GSRM_EVALUATION_KEY): the built GSRM against the annotator on
    the held-out annotations, and the verdict of spec.gsrm.build.gate."""

    model: str
    """The GSRM evaluated (a reference)."""
    examples: Annotated[int, Field(ge=0)]
    """Held-out annotations decomposed."""
    parse_rate: Annotated[float, Field(ge=0, le=1)]
    """Share whose GSRM reply parses into at least one step."""
    step_count_agreement: Annotated[float, Field(ge=0, le=1)]
    """Share whose GSRM step count equals the annotator's."""
    step_agreement: Annotated[float, Field(ge=0, le=1)] | None = None
    """Mean over the judged examples of agreed steps / annotator steps (None without spec.judge,
    or when the judge answered on none)."""
    errors: dict[str, int] = Field(default_factory=dict)
    """GSRM and judge failures by reason (a judge failure leaves its example out of
    stepAgreement)."""
    passed: bool
    """The GSRM meets the gate."""
    gate_failures: list[str] = Field(default_factory=list)
    """Each gate it misses, in words (metric, value, threshold, field)."""
    rows: list[GSRMEvaluationRow] = Field(default_factory=list)
    """One per held-out annotation."""

    def verdict(self) -> str:
        """The numbers and the gate's verdict in one line, for a status message or a log."""
        agreement = "-" if self.step_agreement is None else f"{self.step_agreement:.3f}"
        line = (
            f"{self.examples} held out: parse rate {self.parse_rate:.3f}, step-count agreement "
            f"{self.step_count_agreement:.3f}, step agreement {agreement}"
        )
        return line + (
            "; gate passed"
            if self.passed
            else "; misses its gate: " + "; ".join(self.gate_failures)
        )


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


UNGATED = "trained, not gated yet: rlkd eval-gsrm decides whether this GSRM may score a run"
"""The failure train-gsrm leaves in the build's progress document until eval-gsrm's gate passes,
so a build whose gate never ran (interrupted, killed) is no finished build either."""


def gsrm_built(doc: ProgressDocument | None) -> bool:
    """Whether a GSRM build's progress document (gsrm-build/progress.json) says the build is done:
    trained, uploaded, and not failed (a GSRM that misses its gate records a failure). The model
    at gsrm.model must be there too (rlkd.models.model_stored, in the reader's store)."""
    return doc is not None and doc.stage == "finished" and not doc.failure


# --- the stall watchdog's rules: one for the operator and for `rlkd run` ----------------------


def progress_mark(doc: ProgressDocument | None) -> str:
    """What must change for a learner to count as moving: its step, or its stage (a stage that
    makes no steps, like an evaluation, moves when it ends)."""
    if doc is None:
        return "starting"
    stage = f"{doc.stage}/{doc.evaluating}" if doc.evaluating else doc.stage
    return f"{stage} step {doc.step}"


def stall_budget(
    learner: LearnerSpec, *, moved: bool, doc: ProgressDocument | None
) -> tuple[int, str]:
    """Seconds the learner may stay at one mark (0: no limit) and the field that says so:
    between training steps once it has moved since it (re)started, stallTimeoutSeconds; before
    that (loading, the first weight sync) and in stages without steps, startupTimeoutSeconds."""
    if moved and doc is not None and doc.stage == "training":
        return learner.stall_timeout_seconds, "stallTimeoutSeconds"
    return learner.startup_timeout_seconds, "startupTimeoutSeconds"


def describe_stall(
    doc: ProgressDocument | None, *, waited: timedelta, budget: int, field: str, now: datetime
) -> str:
    """The stall in words: the last mark, for how long, the activity it hung in (the learner's
    own heartbeat), and the budget it exceeded."""
    if doc is None:
        activity = " (no progress document yet: loading the model or first contact with a server)"
    else:
        beat = doc.heartbeat
        since = beat.since and now - datetime.fromisoformat(beat.since.replace("Z", "+00:00"))
        activity = f", activity {beat.activity}" + (f" for {duration(since)}" if since else "")
    return (
        f"no progress for {duration(waited)} at {progress_mark(doc)}{activity} "
        f"(spec.learner.{field} is {budget})"
    )


def duration(delta: timedelta) -> str:
    """A duration as a person reads it: 45s, 3m07s, 2h05m."""
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
