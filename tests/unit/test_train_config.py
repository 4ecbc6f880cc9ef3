"""The spec -> GRPOConfig mapping: every GRPO field reaches TRL (or the dataset), once."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.spec.job import GRPOSpec, RLKDJobSpec
from rlkd.train.config import Placement, grpo_arguments, grpo_config

CPU = Placement(output_dir="/tmp/out", cuda=False)


def spec(**fields: Any) -> RLKDJobSpec:
    body: dict[str, Any] = {
        "student": {"model": "/models/student"},
        "dataset": {"uri": "/data/train.jsonl"},
        "rewards": {"structure": 0},
        "rollout": {"mode": "transformers"},
        "learner": {"gpusPerReplica": 0, "deepspeed": {"stage": 0}},
        "grpo": {"precision": "fp32"},
    }
    for key, value in fields.items():
        body[key] = {**body.get(key, {}), **value}
    return RLKDJobSpec.model_validate(body, by_name=False)


def arguments(placement: Placement = CPU, **fields: Any) -> dict[str, Any]:
    return grpo_arguments(spec(**fields), placement, reward_weights=[1.0, 2.0])


# Spec fields that reach the trainer under another name, or not through GRPOConfig at all.
ELSEWHERE = {
    "max_prompt_length": "prompts longer than this are dropped from the dataset",
    "system_prompt": "part of every prompt",
    "save_total_limit": "retention in the store (rlkd.train.checkpoints.retain)",
}
CHANGED = {
    "learning_rate": 1e-4,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.2,
    "max_grad_norm": 1.0,
    "num_generations": 8,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 2,
    "max_completion_length": 128,
    "temperature": 1.0,
    "beta": 0.0,
    "loss_type": "dr_grpo",
    "num_train_epochs": 2.0,
    "max_steps": 7,
    "save_steps": 3,
    "logging_steps": 5,
    "seed": 7,
    "gradient_checkpointing": False,
    "precision": "fp32",
    "min_learning_rate_ratio": None,
}


@pytest.mark.parametrize("field", sorted(set(GRPOSpec.model_fields) - set(ELSEWHERE)))
def test_every_grpo_field_reaches_the_config(field: str) -> None:
    alias = GRPOSpec.model_fields[field].alias or field
    default = arguments()
    value = CHANGED.get(field, "unlisted")
    assert value != "unlisted", f"add {field} to CHANGED (or ELSEWHERE, saying where it goes)"
    if field == "precision":
        on_gpu = Placement(output_dir="/tmp/out", cuda=True)
        bf16 = grpo_arguments(
            spec(grpo={"precision": "bf16"}, learner={"gpusPerReplica": 1}),
            on_gpu,
            reward_weights=[1.0],
        )
        assert (bf16["bf16"], bf16["fp16"], default["bf16"]) == (True, False, False)
        return
    if field == "min_learning_rate_ratio":
        cosine = arguments(grpo={"lrSchedulerType": "cosine_with_min_lr", alias: 0.1})
        assert cosine["lr_scheduler_kwargs"] == {"min_lr_rate": 0.1}
        assert "lr_scheduler_kwargs" not in default
        return
    changed = arguments(grpo={alias: value})
    assert changed != default, f"grpo.{alias} changes nothing in GRPOConfig"


def test_the_papers_recipe_maps_as_the_method_says() -> None:
    paper = grpo_arguments(
        RLKDJobSpec.model_validate(
            {
                "student": {"model": "Qwen/Qwen2.5-Math-7B"},
                "dataset": {"uri": "s3://data/train.parquet"},
                "gsrm": {"model": "s3://models/gsrm"},
                "judge": {"model": "Qwen/Qwen2.5-7B-Instruct"},
            },
            by_name=False,
        ),
        Placement(
            output_dir="/w",
            cuda=True,
            deepspeed_file="/etc/rlkd/deepspeed.json",
            rollout_url="http://rollout:8000",
            processes=4,
        ),
        reward_weights=[15.0, 10.0, 10.0, 15.0],
    )
    assert paper["learning_rate"] == 5e-5
    assert paper["lr_scheduler_type"] == "constant_with_warmup"
    assert paper["warmup_steps"] == 0.1  # a fraction of the steps (TRL 1.16 has no warmup_ratio)
    assert paper["max_grad_norm"] == 0.2
    assert (paper["num_generations"], paper["per_device_train_batch_size"]) == (4, 2)
    assert paper["gradient_accumulation_steps"] == 4
    assert (paper["max_completion_length"], paper["temperature"]) == (4096, 0.7)
    assert paper["bf16"] and paper["activation_checkpointing"]
    assert paper["deepspeed"] == "/etc/rlkd/deepspeed.json"
    assert (paper["use_vllm"], paper["vllm_mode"]) == (True, "server")
    assert paper["vllm_server_base_url"] == "http://rollout:8000"
    assert paper["reward_weights"] == [15.0, 10.0, 10.0, 15.0]
    assert paper["save_total_limit"] is None  # local copies go once uploaded, never before
    assert "ddp_backend" not in paper  # NCCL on GPUs, chosen by accelerate
    # The watchdog's budgets (defaults 1800 s between steps, 3600 s to start) bound the waits
    # TRL and torch would otherwise wait forever or for their own defaults.
    assert paper["ddp_timeout"] == 3600 and paper["vllm_server_timeout"] == 3600.0


@pytest.mark.parametrize(
    ("learner", "ddp_timeout"),
    [
        ({"stallTimeoutSeconds": 600, "startupTimeoutSeconds": 900}, 900),
        ({"stallTimeoutSeconds": 7200, "startupTimeoutSeconds": 900}, 7200),
        ({"stallTimeoutSeconds": 0, "startupTimeoutSeconds": 0}, 1800),  # off: torch's own
    ],
)
def test_collectives_time_out_after_the_longer_watchdog_budget(
    learner: dict[str, Any], ddp_timeout: int
) -> None:
    assert arguments(learner=learner)["ddp_timeout"] == ddp_timeout


def test_cpu_learners_use_gloo_only_when_distributed_and_no_deepspeed_at_stage_0() -> None:
    single = arguments()
    assert single["use_cpu"] and not single["dataloader_pin_memory"]
    assert "ddp_backend" not in single and "deepspeed" not in single
    two = arguments(Placement(output_dir="/o", cuda=False, processes=2))
    assert two["ddp_backend"] == "gloo"
    assert "use_vllm" not in single


def test_colocated_vllm_takes_the_rollout_server_settings() -> None:
    colocated = grpo_arguments(
        spec(
            rollout={
                "mode": "colocate",
                "vllm": {"gpuMemoryUtilization": 0.3, "maxModelLen": 6144},
            },
            learner={"gpusPerReplica": 2},
        ),
        Placement(output_dir="/o", cuda=True),
        reward_weights=[1.0],
    )
    assert colocated["vllm_mode"] == "colocate"
    assert colocated["vllm_gpu_memory_utilization"] == 0.3
    assert colocated["vllm_max_model_length"] == 6144


def test_the_tiny_example_makes_a_real_grpo_config(tmp_path: Any) -> None:
    from rlkd.spec.validate import load_job

    job = load_job("manifests/examples/tiny-cpu.yaml")
    config = grpo_config(
        job.spec, Placement(output_dir=str(tmp_path), cuda=False), reward_weights=[1.0] * 4
    )
    assert config.max_steps == job.spec.grpo.max_steps
    assert config.num_generations == job.spec.grpo.num_generations
