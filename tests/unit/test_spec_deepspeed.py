"""The learner's DeepSpeed config follows spec.learner.deepspeed; the trainer sets precision."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.spec.deepspeed import deepspeed_config
from tests.jobs import make_job


@pytest.mark.parametrize(
    ("deepspeed", "zero"),
    [
        ({"stage": 0}, {"stage": 0}),
        ({"stage": 1}, {"stage": 1}),
        (
            {"stage": 2, "offloadOptimizer": True},
            {
                "stage": 2,
                "overlap_comm": True,
                "contiguous_gradients": True,
                "offload_optimizer": {"device": "cpu", "pin_memory": True},
            },
        ),
        (
            {"stage": 3, "offloadOptimizer": True, "offloadParams": True},
            {
                "stage": 3,
                "overlap_comm": True,
                "contiguous_gradients": True,
                "offload_optimizer": {"device": "cpu", "pin_memory": True},
                "offload_param": {"device": "cpu", "pin_memory": True},
                "stage3_gather_16bit_weights_on_model_save": True,
            },
        ),
    ],
)
def test_zero_settings(deepspeed: dict[str, Any], zero: dict[str, Any]) -> None:
    config = deepspeed_config(make_job({"learner": {"deepspeed": deepspeed}}).spec)
    assert config["zero_optimization"] == zero


def test_batch_sizes_clipping_and_precision_are_left_to_the_trainer() -> None:
    """One file serves GRPO (grpo.precision) and the GSRM's SFT (gsrm.build.training.precision):
    each trainer fills in its own."""
    config = deepspeed_config(make_job({"grpo": {"precision": "fp16"}}).spec)
    keys = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")
    assert {config[k] for k in (*keys, "gradient_clipping")} == {"auto"}
    assert (config["bf16"], config["fp16"]) == ({"enabled": "auto"}, {"enabled": "auto"})
