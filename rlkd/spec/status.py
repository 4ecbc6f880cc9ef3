"""What the operator reports about a run. Typed here so the CRD's status schema (which keeps
the API server from pruning status) and the operator that writes it share one definition."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field

from rlkd.spec.base import SpecModel

Phase = Literal[
    "Pending",
    "Provisioning",
    "Annotating",
    "BuildingGSRM",
    "Preparing",
    "Training",
    "Evaluating",
    "Succeeded",
    "Failed",
    "Suspended",
]
PHASES: tuple[str, ...] = get_args(Phase)


class Condition(SpecModel):
    """One aspect of the run's state, in the Kubernetes condition convention."""

    type: str = Field(max_length=316)
    """What the condition is about, e.g. StoreReady, InferenceReady, Running, Succeeded."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = Field(default="", max_length=1024)
    """A CamelCase word a program can match on."""
    message: str = Field(default="", max_length=32768)
    """What happened and, when something is wrong, how to fix it."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The spec generation this condition was computed from."""


class Progress(SpecModel):
    """The learner's progress, read from its progress document in the store."""

    step: Annotated[int, Field(ge=0)] = 0
    """Optimizer steps done."""
    total_steps: Annotated[int, Field(ge=0)] | None = None
    """Optimizer steps planned."""
    mean_reward: float | None = None
    """Mean total (weighted) reward of the last logged step."""
    rewards: dict[str, float] = Field(default_factory=dict)
    """Mean of each reward function at the last logged step."""
    reward_errors: dict[str, int] = Field(default_factory=dict)
    """Rewards that could not be computed (infrastructure errors), counted by reason."""
    updated_at: str | None = None
    """When the learner last wrote progress (RFC 3339)."""


class Artifacts(SpecModel):
    """Where the run's results are, as store URIs."""

    checkpoint: str | None = None
    """The latest checkpoint."""
    model: str | None = None
    """The final distilled student."""
    progress: str | None = None
    """The learner's progress document."""


class Watchdog(SpecModel):
    """The stall watchdog's memory, by the operator's own clock (never the learner's, which may
    be skewed or stuck): what the learner's progress looked like and when that last changed."""

    mark: str | None = Field(default=None, max_length=256)
    """The learner's progress when last seen to change (stage and step, see progress_mark)."""
    since: str | None = None
    """When the operator saw `mark` change, or the learner (re)start running (RFC 3339)."""
    moved: bool = False
    """The learner has moved since it (re)started: stallTimeoutSeconds applies, not
    startupTimeoutSeconds."""
    restarts: Annotated[int, Field(ge=0)] = 0
    """Stall restarts done (spec.learner.maxStallRestarts bounds them)."""


class RLKDJobStatus(SpecModel):
    """Observed state of an RLKDJob, written by the operator."""

    phase: Phase = "Pending"
    """Pending, Provisioning, Annotating, BuildingGSRM (spec.gsrm.build), Preparing, Training,
    Evaluating, Succeeded, Failed or Suspended."""
    message: str | None = None
    """A one-line summary of the current phase."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The spec generation the operator last acted on."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """Detailed state, one entry per condition type."""
    start_time: str | None = None
    """When training started (RFC 3339)."""
    completion_time: str | None = None
    """When the run succeeded or failed (RFC 3339)."""
    progress: Progress | None = None
    """Training progress."""
    artifacts: Artifacts | None = None
    """Result locations."""
    watchdog: Watchdog | None = None
    """The stall watchdog's state while the learner runs (spec.learner.stallTimeoutSeconds)."""
