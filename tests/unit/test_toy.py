"""The toy domain: problems, the scripted teacher, random valid orders, the student's
completion format, references; and the tiny tokenizer's reload."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rlkd.errors import DatasetError, ModelError
from rlkd.gsrm.backends.rule import RuleJudge, same
from rlkd.gsrm.reward import structure_reward
from rlkd.gsrm.steps import parse_steps, thinking
from rlkd.rewards import accuracy, format_reward, tag_count
from rlkd.store import LocalStore
from rlkd.toy import TOY_DATASETS, TOY_MODELS, TOY_SCHEME, toy_model, toy_records
from rlkd.toy import arithmetic as A

PROBLEMS = A.problems("train", 300) + A.problems("test", 100)


def valid_orders(problem: A.Problem) -> list[tuple[int, ...]]:
    return list(problem.valid_orders())


def test_the_generator_is_deterministic_by_seed() -> None:
    assert A.problems("train", 50) == A.problems("train", 50)
    assert A.problems("train", 50, seed=1) == A.problems("train", 50, seed=1)
    assert A.problems("train", 50) != A.problems("train", 50, seed=1)
    assert toy_records("arithmetic", None) == toy_records("arithmetic", None)


def test_a_larger_draw_starts_with_the_smaller_one() -> None:
    assert A.problems("train", 500)[:100] == A.problems("train", 100)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_splits_never_share_a_problem(seed: int) -> None:
    train = {p.text for p in A.problems("train", 3000, seed=seed)}
    test = {p.text for p in A.problems("test", 300, seed=seed)}
    assert len(train) == 3000 and len(test) == 300
    assert not train & test
    records = {r["problem"] for r in toy_records("arithmetic", None)}
    held_out = {r["problem"] for r in toy_records("arithmetic-test", None)}
    assert not records & held_out


def test_most_problems_have_several_valid_orders() -> None:
    records = toy_records("arithmetic", None)
    assert {r["orders"] for r in records} == {1, 2, 6}
    assert sum(r["orders"] > 1 for r in records) / len(records) > 0.75


def test_a_problem_reads_back_from_its_text() -> None:
    for problem in PROBLEMS:
        assert A.parse_problem(problem.text) == problem


@pytest.mark.parametrize("problem", PROBLEMS[:60], ids=lambda p: p.text)
def test_every_valid_order_is_correct_reasoning_in_step_format(problem: A.Problem) -> None:
    for order in valid_orders(problem):
        steps = parse_steps(A.reasoning(problem, order))
        k = len(problem.groups)
        assert len(steps) == 2 * k - 1
        assert all(s.meta and s.subproblem and s.answer for s in steps)
        # The first k steps work out each group once, in `order`, and say which one they take.
        for step, index in zip(steps[:k], order, strict=True):
            group = problem.groups[index]
            assert step.meta == f"Take ({group.text})." and step.subproblem == group.text
            assert f"({group.text})" in problem.text
            a, op, b = group.text
            assert same(str(eval(f"{a}{op}{b}")), step.answer, numeric=True)
        # Then the results are added from the left, each addition correct.
        total = problem.groups[0].value
        for step, group in zip(steps[k:], problem.groups[1:], strict=True):
            assert step.subproblem == f"{total}+{group.value}"
            total += group.value
            assert int(step.answer) == total
        assert steps[-1].answer == str(problem.answer)


def test_an_order_that_is_not_a_permutation_is_refused() -> None:
    problem = A.parse_problem("Compute (1+2)+(3+2).")
    with pytest.raises(ValueError, match="not an order"):
        A.reasoning(problem, (0, 0))


def test_the_teacher_takes_the_last_open_group_first() -> None:
    for problem in PROBLEMS:
        order = problem.teacher_order
        assert order in valid_orders(problem)
        assert order == tuple(range(len(problem.groups)))[::-1]
    record = A.record(A.parse_problem("Compute (4+3)+(7+3)+(6+3)."))
    assert record == {
        "problem": "Compute (4+3)+(7+3)+(6+3).",
        "answer": "26",
        "orders": 6,
        "groups": 3,
        "teacher_reasoning": "\n".join(
            [
                "[Meta-reasoning 1]: Take (6+3).",
                "[Sub-problem 1]: 6+3",
                "[Answer 1]: 9",
                "[Meta-reasoning 2]: Take (7+3).",
                "[Sub-problem 2]: 7+3",
                "[Answer 2]: 10",
                "[Meta-reasoning 3]: Take (4+3).",
                "[Sub-problem 3]: 4+3",
                "[Answer 3]: 7",
                "[Meta-reasoning 4]: Add the results.",
                "[Sub-problem 4]: 7+10",
                "[Answer 4]: 17",
                "[Meta-reasoning 5]: Add the next result.",
                "[Sub-problem 5]: 17+9",
                "[Answer 5]: 26",
            ]
        ),
    }


def test_the_rule_judge_scores_alignment_with_the_teacher_by_the_groups_picked() -> None:
    """Full reward for the teacher's order; for another order, 1 per leading step that picks
    the same group as the teacher (everything after the first different pick scores 0)."""
    for problem in PROBLEMS[:100]:
        teacher = parse_steps(A.record(problem)["teacher_reasoning"])
        for order in valid_orders(problem):
            student = parse_steps(A.reasoning(problem, order))
            agree = 0
            while agree < len(order) and order[agree] == problem.teacher_order[agree]:
                agree += 1
            expected = len(teacher) if agree >= len(order) - 1 else agree
            assert structure_reward(student, teacher, RuleJudge()) == expected


def test_the_completion_gets_full_format_tag_count_and_accuracy() -> None:
    rng = random.Random(0)
    problems = PROBLEMS[:100]
    completions = [A.completion(p, rng.choice(valid_orders(p))) for p in problems]
    assert format_reward(completions) == [1.0] * len(problems)
    assert tag_count(completions) == [1.0] * len(problems)
    golds = [str(p.answer) for p in problems]
    assert accuracy(completions, golds) == [1.0] * len(problems)
    for problem, completion in zip(problems, completions, strict=True):
        assert parse_steps(thinking(completion)) == parse_steps(
            A.reasoning(problem, _order_of(problem, completion))
        )


def _order_of(problem: A.Problem, completion: str) -> tuple[int, ...]:
    steps = parse_steps(thinking(completion))[: len(problem.groups)]
    texts = [g.text for g in problem.groups]
    return tuple(texts.index(s.subproblem) for s in steps)


def test_records_have_the_recipes_columns_and_a_gold_that_math_verify_reads() -> None:
    records = toy_records("arithmetic-test", None)
    assert len(records) == 256
    assert all(isinstance(r[c], str) for r in records for c in ("problem", "answer"))
    assert None not in accuracy(
        [f"\\boxed{{{r['answer']}}}" for r in records[:20]], [r["answer"] for r in records[:20]]
    )


def test_records_are_written_to_the_store_once_and_read_back(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = toy_records("arithmetic", store)
    (key,) = store.list("toy/")
    assert key.startswith("toy/arithmetic-") and key.endswith(".jsonl")
    store.put_bytes(key, store.get_bytes(key).replace(b"Compute", b"Work out", 1))  # a marker
    again = toy_records("arithmetic", store)
    assert again[0]["problem"] == first[0]["problem"].replace("Compute", "Work out")
    assert toy_records("arithmetic", store)[1:] == first[1:]


@pytest.mark.parametrize("name", ["arithmetics", "tiny-student", ""])
def test_an_unknown_dataset_names_the_toy_datasets(name: str) -> None:
    with pytest.raises(DatasetError, match=r"toy://arithmetic, toy://arithmetic-test"):
        toy_records(name, None)


@pytest.mark.parametrize("name", ["tiny", "arithmetic", "tiny-student/"])
def test_an_unknown_model_names_the_toy_models(name: str, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="toy://tiny-student"):
        toy_model(name, None, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing built, nothing locked


def test_the_published_names() -> None:
    assert TOY_SCHEME == "toy://"
    assert TOY_MODELS == ("tiny-student",)
    assert TOY_DATASETS == ("arithmetic", "arithmetic-test")


def test_the_package_imports_no_ml_stack() -> None:
    import subprocess
    import sys

    heavy = ("torch", "transformers", "tokenizers", "trl")
    code = f"import sys, rlkd.toy; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_toy_tokenizer_reloads_as_qwen2_and_keeps_the_tags_as_text(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen2Tokenizer

    from rlkd.toy.model import build_model, train_tokenizer
    from rlkd.toy.student import TOY_SYSTEM_PROMPT, Recipe, prompt_text, tokenizer_corpus

    recipe = Recipe()
    tokenizer = train_tokenizer(tokenizer_corpus(recipe), vocab_size=recipe.vocab_size)
    path = build_model(tmp_path / "m", tokenizer=tokenizer, shape=recipe.shape, max_positions=512)
    reloaded = AutoTokenizer.from_pretrained(path)
    assert isinstance(reloaded, Qwen2Tokenizer)
    problem = A.parse_problem("Compute (4+3)+(7+3)+(6+3).")
    completion = A.completion(problem, (1, 0, 2))
    for text in (problem.text, completion, TOY_SYSTEM_PROMPT):
        ids = reloaded(text, add_special_tokens=False)["input_ids"]
        assert ids == tokenizer.encode(text, add_special_tokens=False).ids
        assert reloaded.decode(ids, skip_special_tokens=True) == text  # tags are plain text
    fast = PreTrainedTokenizerFast.from_pretrained(path)
    prompt = prompt_text(fast, problem.text)
    assert prompt.endswith("<|im_start|>assistant\n") and TOY_SYSTEM_PROMPT in prompt
    # The domain's text is short in tokens, so the tiny example's lengths fit it.
    assert len(fast(prompt, add_special_tokens=False)["input_ids"]) <= 64
    assert len(fast(completion, add_special_tokens=False)["input_ids"]) <= 160


def test_the_groups_of_a_problem_differ_in_their_first_digit_only() -> None:
    for problem in PROBLEMS:
        firsts = [g.a for g in problem.groups]
        assert len(set(firsts)) == len(firsts)
        assert len({(g.op, g.b) for g in problem.groups}) == 1
        assert all(1 <= g.value <= 18 for g in problem.groups)


@pytest.mark.parametrize("text", ["Compute (4+3)+(7+3)", "Compute (12+3).", "(4+3)", ""])
def test_text_that_is_not_a_problem_does_not_parse(text: str) -> None:
    with pytest.raises(ValueError, match="not a toy arithmetic problem"):
        A.parse_problem(text)
