"""The reward functions inside a real TRL GRPOTrainer step (CPU, a tiny random model): TRL
calls them as its contract says, logs them by name, and shows the structure
reward's failures through `log_metric`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from rlkd.gsrm.backends.rule import RuleDecomposer, RuleJudge
from rlkd.gsrm.engine import StructureEngine
from rlkd.gsrm.steps import parse_steps
from rlkd.gsrm.types import DecomposeRequest, Decomposition, Failure
from rlkd.rewards import reward_functions
from rlkd.spec import RLKDJobSpec

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")

TEACHER = "[Meta-reasoning 1]: add [Sub-problem 1]: 2+2 [Answer 1]: 4"
CHARS = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789<>/[]:{}\\ \n-+?.,"))


class TimeoutDecomposer(RuleDecomposer):
    """The student side always times out."""

    async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
        return [
            parse_steps(r.reasoning) if r.reasoning == TEACHER else Failure("timeout")
            for r in requests
        ]


class FirstTimeoutDecomposer(RuleDecomposer):
    """One student completion of the batch times out; the others decompose."""

    async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
        students = [r for r in requests if r.reasoning != TEACHER]
        return [
            Failure("timeout") if students and r is students[0] else parse_steps(r.reasoning)
            for r in requests
        ]


def tiny_student() -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerFast]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "<eos>": 1, **{c: i + 2 for i, c in enumerate(CHARS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer.decoder = decoders.Fuse()
    config = transformers.Qwen2Config(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
    )
    return transformers.Qwen2ForCausalLM(config), transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>"
    )


@pytest.mark.parametrize(
    ("decomposer", "structure_mean", "errors"),
    [
        (RuleDecomposer(), 0.0, {}),
        (TimeoutDecomposer(), None, {"timeout": 4}),
        (FirstTimeoutDecomposer(), None, {"timeout": 1, "group_dropped": 3}),
    ],
    ids=["ok", "timeouts", "one-timeout-drops-its-group"],
)
def test_grpo_step_with_the_recipes_rewards(
    tmp_path: Path, decomposer: RuleDecomposer, structure_mean: float | None, errors: dict
) -> None:
    from datasets import Dataset

    spec = RLKDJobSpec.model_validate(
        {
            "student": {"model": "org/student"},
            "dataset": {"uri": "s3://data/train.jsonl"},
            "gsrm": {"backend": "rule"},
            "judge": {"backend": "rule"},
        }
    )
    functions, weights = reward_functions(spec, structure=StructureEngine(decomposer, RuleJudge()))
    row = {"prompt": "2+2?", "problem": "2+2", "answer": "4", "teacher_reasoning": TEACHER}
    model, tokenizer = tiny_student()
    args = trl.GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        dataloader_pin_memory=False,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=1,
        beta=0.0,
        reward_weights=weights,
        report_to=[],
        save_strategy="no",
        seed=0,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=functions,
        args=args,
        train_dataset=Dataset.from_list([row] * 4),
        processing_class=tokenizer,
    )
    trainer.train()

    logs = trainer.state.log_history[0]
    for name in ("accuracy", "format", "tag_count"):
        assert f"rewards/{name}/mean" in logs
    # Random 8-character completions hold no steps: a real empty decomposition scores 0; a
    # timeout is None (TRL's mean of nothing) and shows up as a logged count. One timeout makes
    # its whole group (here the batch: one prompt, 4 generations) None, not 0 next to numbers.
    assert logs["rewards/structure/mean"] == structure_mean
    assert {k.split("/")[1]: v for k, v in logs.items() if k.startswith("structure_errors/")} == (
        errors
    )
    assert functions[-1].errors == errors
