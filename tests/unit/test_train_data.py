"""The rows GRPOTrainer reads, and the held-out rows evaluation reads."""

from __future__ import annotations

from typing import Any

import pytest

from rlkd.data import held_out, prompt_messages, select
from rlkd.errors import DatasetError
from rlkd.spec.job import DatasetSpec, RLKDJobSpec
from rlkd.train.data import prompt_rows


def spec(**fields: Any) -> RLKDJobSpec:
    body: dict[str, Any] = {
        "student": {"model": "/models/student"},
        "dataset": {"uri": "/data/train.jsonl"},
        "gsrm": {"backend": "rule"},
        "judge": {"backend": "rule"},
        "grpo": {"maxPromptLength": 4, "systemPrompt": "Think."},
    }
    body.update(fields)
    return RLKDJobSpec.model_validate(body, by_name=False)


RECORDS = [
    {"problem": "short", "answer": "1", "teacher_reasoning": "t1", "extra": 5},
    {"problem": "a much longer problem", "answer": "2", "teacher_reasoning": "t2"},
]


def words(messages: list[dict[str, str]]) -> int:
    """A stand-in tokenizer: one token per word."""
    return sum(len(m["content"].split()) for m in messages)


def test_rows_carry_the_prompt_and_the_columns_the_rewards_read() -> None:
    rows = prompt_rows(spec(), RECORDS, words)
    assert rows.dropped == 1  # "Think." + 4 words > 4 tokens: dropped, never cut
    assert rows.rows == [
        {
            "prompt": prompt_messages(spec(), "short"),
            "problem": "short",
            "answer": "1",
            "teacher_reasoning": "t1",
        }
    ]
    assert rows.rows[0]["prompt"][0] == {"role": "system", "content": "Think."}


def test_rows_use_the_column_names_the_spec_gives() -> None:
    job = spec(
        dataset={
            "uri": "/d.jsonl",
            "columns": {"problem": "q", "answer": "gold", "teacherDecomposition": "steps"},
        },
        teacher={"source": "decompositions"},
    )
    rows = prompt_rows(job, [{"q": "x", "gold": "3", "steps": "[Answer 1]: 3"}], words)
    assert set(rows.rows[0]) == {"prompt", "q", "gold", "steps"}


def test_no_row_left_names_the_field_to_fix() -> None:
    with pytest.raises(DatasetError, match=r"grpo\.maxPromptLength"):
        prompt_rows(spec(grpo={"maxPromptLength": 1}), RECORDS, words)


@pytest.mark.parametrize("selection", [{"limit": 3}, {"fraction": 0.25}])
def test_held_out_rows_are_exactly_the_ones_training_does_not_see(selection: Any) -> None:
    records = [{"problem": str(i)} for i in range(12)]
    dataset = DatasetSpec(uri="/d.jsonl", **selection)
    chosen, rest = select(records, dataset), held_out(records, dataset)
    assert len(chosen) == 3 and len(rest) == 9
    assert {r["problem"] for r in chosen} | {r["problem"] for r in rest} == {
        str(i) for i in range(12)
    }
    assert not {r["problem"] for r in chosen} & {r["problem"] for r in rest}
