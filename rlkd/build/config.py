"""The GSRM's SFT recipe (spec.gsrm.build.training) as TRL's `SFTConfig`, in one function, so
every field is used once and visibly. Where and how the trainer runs (CPU or GPU, DeepSpeed,
checkpoints, timeouts) is the learner's own mapping (`rlkd.train.config.trainer_arguments`).

`saveTotalLimit` is applied in the store (`rlkd.train.checkpoints.retain`); `warmupRatio` goes
to `warmup_steps`, which takes a fraction of the steps when below 1 (as for GRPO).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rlkd.errors import SpecError
from rlkd.spec.job import GSRMBuildSpec, RLKDJobSpec
from rlkd.train.config import Placement, trainer_arguments

if TYPE_CHECKING:
    from trl import SFTConfig


def gsrm_build(spec: RLKDJobSpec) -> GSRMBuildSpec:
    """spec.gsrm.build, which `annotate`, `train-gsrm` and `eval-gsrm` need."""
    if spec.gsrm is None or spec.gsrm.build is None:
        raise SpecError(
            [
                "spec.gsrm.build: is not set: annotate, train-gsrm and eval-gsrm build the GSRM "
                "that spec.gsrm.model names; add spec.gsrm.build (docs/build-a-gsrm.md)"
            ]
        )
    return spec.gsrm.build


def sft_arguments(spec: RLKDJobSpec, placement: Placement) -> dict[str, Any]:
    """SFTConfig's keyword arguments for spec.gsrm.build (pure, so it is table-tested)."""
    training = gsrm_build(spec).training
    return {
        **trainer_arguments(
            spec,
            placement,
            precision=training.precision,
            gradient_checkpointing=training.gradient_checkpointing,
            seed=training.seed,
            save_steps=training.save_steps,
        ),
        "learning_rate": training.learning_rate,
        "lr_scheduler_type": training.lr_scheduler_type,
        "warmup_steps": training.warmup_ratio,
        "num_train_epochs": training.num_train_epochs,
        "max_steps": training.max_steps if training.max_steps is not None else -1,
        "per_device_train_batch_size": training.per_device_train_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "max_length": training.max_length,
        # The loss is on the decomposition only: the prompt (system, domain example, problem,
        # reasoning) is context the GSRM is given, never text it learns to write.
        "completion_only_loss": True,
        "packing": False,
        # Every step's loss reaches the progress bar and the progress document.
        "logging_steps": 1,
    }


def sft_config(spec: RLKDJobSpec, placement: Placement) -> SFTConfig:
    """TRL's SFTConfig for spec.gsrm.build on this machine."""
    from trl import SFTConfig

    return SFTConfig(**sft_arguments(spec, placement))
