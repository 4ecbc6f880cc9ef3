"""The spec's GRPO recipe as TRL's `GRPOConfig`, in one function, so every field of the spec is
used once and visibly, and a reviewer can read what the trainer gets.

Two spec fields have no TRL 1.16 field of the same meaning and are mapped honestly elsewhere:
`grpo.maxPromptLength` (TRL no longer truncates prompts; longer prompts are dropped from the
dataset, `rlkd.train.data`) and `grpo.systemPrompt` (part of each prompt). `grpo.warmupRatio`
goes to `warmup_steps`, which takes a fraction of the steps when below 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlkd.spec.job import Precision, RLKDJobSpec
from rlkd.train.timeouts import collective_timeout

if TYPE_CHECKING:
    from trl import GRPOConfig


@dataclass(frozen=True)
class Placement:
    """Where this learner process runs: facts of the machine, not of the recipe."""

    output_dir: str
    """Local working directory: checkpoints are saved here before they are uploaded."""
    cuda: bool
    """A GPU is present (else CPU training, gloo collectives)."""
    deepspeed_file: str | None = None
    """The DeepSpeed JSON (rlkd.spec.deepspeed), used when deepspeed.stage > 0."""
    rollout_url: str | None = None
    """The rollout vLLM server's root URL (rollout.mode server)."""
    processes: int = 1
    """Learner processes in the whole run (every node's ranks)."""


def trainer_arguments(
    spec: RLKDJobSpec,
    placement: Placement,
    *,
    precision: Precision,
    gradient_checkpointing: bool,
    seed: int,
    save_steps: int,
) -> dict[str, Any]:
    """The TrainingArguments every rlkd trainer shares (GRPO, the GSRM's SFT): where it runs
    (CPU or GPU, gloo, DeepSpeed), checkpoints saved locally and uploaded by the learner, the
    watchdog's collective timeout and the spec's trackers."""
    learner = spec.learner
    arguments: dict[str, Any] = {
        "output_dir": placement.output_dir,
        "seed": seed,
        "data_seed": seed,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "activation_checkpointing": gradient_checkpointing,
        # Checkpoints: saved locally every saveSteps, then uploaded; retention (saveTotalLimit)
        # is applied in the store, and local copies are removed only once uploaded.
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": None,
        "report_to": list(learner.report_to),
        "disable_tqdm": True,
        "log_level": "warning",
        "use_cpu": not placement.cuda,
        "dataloader_pin_memory": placement.cuda,
        # A hung collective is an error after the watchdog's budget, not a silent wait.
        "ddp_timeout": collective_timeout(learner),
    }
    if not placement.cuda and placement.processes > 1:
        arguments["ddp_backend"] = "gloo"
    if learner.deepspeed.stage > 0:
        arguments["deepspeed"] = placement.deepspeed_file
    return arguments


def grpo_arguments(
    spec: RLKDJobSpec, placement: Placement, *, reward_weights: Sequence[float]
) -> dict[str, Any]:
    """GRPOConfig's keyword arguments for `spec` (pure, so it is table-tested field by field)."""
    grpo, rollout, learner = spec.grpo, spec.rollout, spec.learner
    arguments: dict[str, Any] = {
        **trainer_arguments(
            spec,
            placement,
            precision=grpo.precision,
            gradient_checkpointing=grpo.gradient_checkpointing,
            seed=grpo.seed,
            save_steps=grpo.save_steps,
        ),
        "learning_rate": grpo.learning_rate,
        "lr_scheduler_type": grpo.lr_scheduler_type,
        "warmup_steps": grpo.warmup_ratio,
        "max_grad_norm": grpo.max_grad_norm,
        "num_generations": grpo.num_generations,
        "per_device_train_batch_size": grpo.per_device_train_batch_size,
        "gradient_accumulation_steps": grpo.gradient_accumulation_steps,
        "max_completion_length": grpo.max_completion_length,
        "temperature": grpo.temperature,
        "beta": grpo.beta,
        "loss_type": grpo.loss_type,
        "num_train_epochs": grpo.num_train_epochs,
        "max_steps": grpo.max_steps if grpo.max_steps is not None else -1,
        "logging_steps": grpo.logging_steps,
        "reward_weights": list(reward_weights),
        # Reward functions read dataset columns (problem, answer, teacher side).
        "remove_unused_columns": False,
    }
    if grpo.lr_scheduler_type == "cosine_with_min_lr":
        arguments["lr_scheduler_kwargs"] = {"min_lr_rate": grpo.min_learning_rate_ratio}
    if rollout.mode in ("server", "colocate"):
        arguments |= {"use_vllm": True, "vllm_mode": rollout.mode}
    if rollout.mode == "server":
        arguments["vllm_server_base_url"] = placement.rollout_url
        if learner.startup_timeout_seconds:  # waiting for the rollout server is startup
            arguments["vllm_server_timeout"] = float(learner.startup_timeout_seconds)
    if rollout.mode == "colocate":
        arguments |= {
            "vllm_gpu_memory_utilization": rollout.vllm.gpu_memory_utilization,
            "vllm_tensor_parallel_size": rollout.vllm.tensor_parallel_size,
        }
        if rollout.vllm.max_model_len is not None:
            arguments["vllm_max_model_length"] = rollout.vllm.max_model_len
    return arguments


def grpo_config(
    spec: RLKDJobSpec, placement: Placement, *, reward_weights: Sequence[float]
) -> GRPOConfig:
    """TRL's GRPOConfig for `spec` on this machine."""
    from trl import GRPOConfig

    return GRPOConfig(**grpo_arguments(spec, placement, reward_weights=reward_weights))
