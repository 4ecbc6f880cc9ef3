"""The learner's one TrainerCallback: it reports progress, uploads checkpoints and stops a run
whose structure rewards mostly fail, at the Trainer's own step boundaries (TRL leaves no need for
a trainer subclass). Decisions every rank must share are taken on numbers summed over all ranks,
so every rank stops together and none waits in a collective alone."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from rlkd.errors import RLKDError
from rlkd.rewards import StructureReward
from rlkd.spec.progress import Activity
from rlkd.train.checkpoints import Uploader
from rlkd.train.progress import ProgressReporter

log = logging.getLogger(__name__)


class TooManyRewardFailures(RLKDError):
    """Most structure rewards of a step could not be computed: training on noise is worse than
    stopping (the pod restarts and resumes once the servers are back)."""


def sum_over_ranks(counts: Mapping[str, int]) -> dict[str, int]:
    """`counts` summed over every rank (this rank's alone outside a distributed run)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(counts)
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, dict(counts))
    total: Counter[str] = Counter()
    for part in gathered:
        total.update(part)
    return dict(total)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class LearnerCallback(TrainerCallback):
    """Progress, checkpoints and the failure guard of one learner process."""

    def __init__(
        self,
        progress: ProgressReporter,
        *,
        structure: StructureReward | None,
        max_failure_fraction: float,
        uploader: Uploader | None,
        step_activity: Activity = "generating",
    ) -> None:
        self.progress = progress
        self.step_activity = step_activity
        """What a step starts with: GRPO generates rollouts, SFT goes straight to updating."""
        self.structure = structure
        self.max_failure_fraction = max_failure_fraction
        self.uploader = uploader
        """This node's uploader (its local rank 0 only)."""
        self._seen = (0, 0)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.progress.activity(self.step_activity)

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self.progress.activity("updating")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        self._check_failures(state.global_step)
        self.progress.step(state.global_step, state.max_steps)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        logs = logs or {}
        errors = sum_over_ranks(self.structure.errors) if self.structure is not None else {}
        rewards = {
            key.removeprefix("rewards/").removesuffix("/mean"): float(value)
            for key, value in logs.items()
            if key.startswith("rewards/") and key.endswith("/mean") and value is not None
        }
        if "reward" in logs or rewards:
            self.progress.step(
                state.global_step,
                state.max_steps,
                rewards=rewards,
                mean_reward=logs.get("reward"),
                errors=errors,
            )

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        barrier()  # every rank's shards are on disk before the node's upload lists them
        if self.uploader is not None:
            self.progress.activity("uploading")
            self.uploader.submit(Path(args.output_dir, f"checkpoint-{state.global_step}"))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if self.uploader is not None:
            self.uploader.wait()

    def _check_failures(self, step: int) -> None:
        if self.structure is None:
            return
        scored, failed = self.structure.scored, self.structure.failed
        delta = {"scored": scored - self._seen[0], "failed": failed - self._seen[1]}
        self._seen = (scored, failed)
        total = sum_over_ranks(delta)
        if total["scored"] and total["failed"] / total["scored"] > self.max_failure_fraction:
            errors = sum_over_ranks(self.structure.last_errors)
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "unknown"
            raise TooManyRewardFailures(
                f"step {step}: {total['failed']} of {total['scored']} structure rewards failed "
                f"({reasons}), above rewards.maxStructureFailureFraction "
                f"{self.max_failure_fraction:g}; check the GSRM and judge servers"
            )


class StepBar(TrainerCallback):
    """A progress bar over optimizer steps with the latest mean reward and loss (rank 0)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        logs = logs or {}
        shown = {k: f"{logs[k]:.3g}" for k in ("reward", "loss") if logs.get(k) is not None}
        if self.bar is not None and shown:
            self.bar.set_postfix(shown)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()


def scoring(progress: ProgressReporter, functions: Sequence[Any]) -> list[Callable[..., Any]]:
    """The reward functions, each first saying `scoring` in the heartbeat: TRL calls no callback
    between generation and rewards, and a hung GSRM or judge is found in this activity. Names and
    sync/async kinds are kept (TRL logs by `__name__` and gathers the async ones)."""

    from trl.trainer.utils import is_async_callable  # TRL's own test of which it gathers

    def reporting(function: Any) -> Callable[..., Any]:
        if is_async_callable(function):

            async def score_async(*args: Any, **kwargs: Any) -> Any:
                progress.activity("scoring")
                return await function(*args, **kwargs)

            wrapped: Callable[..., Any] = score_async
        else:

            def score(*args: Any, **kwargs: Any) -> Any:
                progress.activity("scoring")
                return function(*args, **kwargs)

            wrapped = score
        wrapped.__name__ = function.__name__
        return wrapped

    return [reporting(f) for f in functions]


def report_weight_sync(trainer: Any, progress: ProgressReporter) -> None:
    """Say `syncing` while TRL pushes the policy's weights to the vLLM rollout server (the hang
    the stall watchdog exists for), `generating` after: TRL has no callback around it, so the
    trainer's own `vllm_generation.sync_weights` is wrapped on this instance."""
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None:
        return
    sync = generation.sync_weights

    def syncing() -> None:
        progress.activity("syncing")
        sync()
        progress.activity("generating")

    generation.sync_weights = syncing
