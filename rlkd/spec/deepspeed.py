"""The learner's DeepSpeed configuration, derived from the spec in one place: the operator puts
it in the job's ConfigMap and the learner (on a cluster or on one machine) uses the same function,
so what a reviewer sees in `rlkd render` is what trains."""

from __future__ import annotations

from typing import Any

from rlkd.spec.job import RLKDJobSpec

AUTO = "auto"
"""Filled in by the HuggingFace Trainer from its own arguments, so batch sizes, clipping and
precision are set once, by the recipe that trains (GRPO, or the GSRM's SFT with its own
precision): one file serves both."""


def deepspeed_config(spec: RLKDJobSpec) -> dict[str, Any]:
    """The DeepSpeed JSON for `spec.learner.deepspeed` (the trainer's precision fills it in)."""
    settings = spec.learner.deepspeed
    zero: dict[str, Any] = {"stage": settings.stage}
    if settings.stage >= 2:
        zero |= {"overlap_comm": True, "contiguous_gradients": True}
    if settings.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if settings.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if settings.stage == 3:
        # Gather the sharded weights when saving, so checkpoints load with from_pretrained.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": AUTO,
        "train_micro_batch_size_per_gpu": AUTO,
        "gradient_accumulation_steps": AUTO,
        "gradient_clipping": AUTO,
        "bf16": {"enabled": AUTO},
        "fp16": {"enabled": AUTO},
        "zero_optimization": zero,
    }
