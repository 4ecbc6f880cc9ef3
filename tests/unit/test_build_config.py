"""The spec -> SFTConfig mapping of the GSRM build: every training field reaches TRL (or the
store's retention), once; where and how it runs is the learner's own mapping."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.build.config import gsrm_build, sft_arguments, sft_config
from rlkd.errors import SpecError
from rlkd.spec.job import GSRMTrainingSpec, RLKDJobSpec
from rlkd.train.config import Placement, grpo_arguments, trainer_arguments
from tests.gsrm_build import build_job_document, with_build

CPU = Placement(output_dir="/tmp/out", cuda=False)


def spec(**training: Any) -> RLKDJobSpec:
    document = build_job_document("b", "/models/base")
    build = document["spec"]["gsrm"]["build"]
    return RLKDJobSpec.model_validate(
        with_build(document, training={**build["training"], **training})["spec"], by_name=False
    )


ELSEWHERE = {"save_total_limit": "retention in the store (rlkd.train.checkpoints.retain)"}
CHANGED = {
    "learning_rate": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.2,
    "num_train_epochs": 2.0,
    "max_steps": 7,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 2,
    "max_length": 512,
    "save_steps": 3,
    "seed": 7,
    "precision": "bf16",
    "gradient_checkpointing": True,
}


@pytest.mark.parametrize("field", sorted(set(GSRMTrainingSpec.model_fields) - set(ELSEWHERE)))
def test_every_training_field_reaches_the_config(field: str) -> None:
    alias = GSRMTrainingSpec.model_fields[field].alias or field
    value = CHANGED.get(field, "unlisted")
    assert value != "unlisted", f"add {field} to CHANGED (or ELSEWHERE, saying where it goes)"
    assert sft_arguments(spec(**{alias: value}), CPU) != sft_arguments(spec(), CPU), (
        f"gsrm.build.training.{alias} changes nothing in SFTConfig"
    )


def test_the_papers_recipe_maps_as_the_method_says() -> None:
    """lr 5e-5, linear schedule, warmup 0.1, 1 epoch, bf16, max length 25k; loss on the
    decomposition only."""
    document = build_job_document("paper", "Qwen/Qwen2.5-7B-Instruct")
    document["spec"]["gsrm"]["build"].pop("training")
    document["spec"] |= {"learner": {"gpusPerReplica": 4, "deepspeed": {"stage": 3}}, "grpo": {}}
    paper = sft_arguments(
        RLKDJobSpec.model_validate(document["spec"], by_name=False),
        Placement(output_dir="/w", cuda=True, deepspeed_file="/etc/rlkd/ds.json", processes=4),
    )
    assert (paper["learning_rate"], paper["lr_scheduler_type"]) == (5e-5, "linear")
    assert paper["warmup_steps"] == 0.1  # a fraction of the steps
    assert (paper["num_train_epochs"], paper["max_steps"]) == (1.0, -1)
    assert (paper["bf16"], paper["fp16"], paper["max_length"]) == (True, False, 25000)
    assert paper["completion_only_loss"] is True and paper["packing"] is False
    assert paper["deepspeed"] == "/etc/rlkd/ds.json" and "ddp_backend" not in paper
    assert paper["save_total_limit"] is None  # local copies go once uploaded, never before


def test_where_it_runs_is_the_learners_own_mapping() -> None:
    """The arguments GRPO and SFT share come from one function, with each recipe's values."""
    two_cpus = Placement(output_dir="/o", cuda=False, processes=2)
    job = spec(seed=3, saveSteps=5)
    training = gsrm_build(job).training
    shared = trainer_arguments(
        job,
        two_cpus,
        precision=training.precision,
        gradient_checkpointing=training.gradient_checkpointing,
        seed=3,
        save_steps=5,
    )
    sft = sft_arguments(job, two_cpus)
    assert {k: sft[k] for k in shared} == shared
    assert sft["ddp_backend"] == "gloo" and sft["use_cpu"] and sft["seed"] == sft["data_seed"] == 3
    grpo = grpo_arguments(job, two_cpus, reward_weights=[1.0])
    assert {k: grpo[k] for k in ("use_cpu", "ddp_backend", "ddp_timeout", "report_to")} == {
        k: sft[k] for k in ("use_cpu", "ddp_backend", "ddp_timeout", "report_to")
    }


def test_a_job_without_a_build_says_which_field_to_add() -> None:
    document = build_job_document("b", "/models/base")
    document["spec"]["gsrm"] = {"backend": "rule"}
    document["spec"]["rewards"] = {"structure": 15}
    plain = RLKDJobSpec.model_validate(document["spec"], by_name=False)
    with pytest.raises(SpecError, match=r"^spec.gsrm.build: is not set: .*add spec.gsrm.build"):
        sft_arguments(plain, CPU)


def test_the_mapping_makes_a_real_sft_config(tmp_path: Any) -> None:
    config = sft_config(spec(), Placement(output_dir=str(tmp_path), cuda=False))
    assert (config.max_steps, config.max_length, config.completion_only_loss) == (4, 2048, True)
    assert not config.activation_checkpointing and not config.bf16
