"""A tiny GSRM and a tiny judge for the toy domain, for tests that serve a real GSRM and judge
(the whole system in miniature): a random tiny model writes no steps and answers neither yes nor
no, so the structure reward would never ask the judge and every verdict would be a failure.

    gsrm, judge = mini_gsrm(), mini_judge()      # save_pretrained folders, built once per machine

Each is a tiny Qwen2 (head size 32, which vLLM's CPU kernels take; its tokenizer reloads as
Qwen2Tokenizer) fine-tuned for a few hundred steps with the GSRM build's own SFT code
(`rlkd.build.sft.sft_trainer` under `rlkd.build.config.sft_arguments`), on exactly the prompts the
reward engine sends:
- the GSRM on `sft_record`s of toy reasoning paths in random valid orders (students write those;
  the teacher's order is one of them), the completion being the path's steps in the canonical
  format;
- the judge on `judge_messages` questions comparing the same step of two valid paths of one toy
  problem (the pairs the structure reward asks about), answered "yes" or "no", balanced.
They are test tooling, not shipped models: they write parseable steps and readable verdicts,
which is what the scenario needs; how faithful they are is measured in
tests/integration/test_minimodels.py, not promised.

Built deterministically and cached by `rlkd.toy.refs.cached_model` (the toy student's cache) in
`$RLKD_TEST_MODELS` (default ~/.cache/rlkd-tests) and, when a store is given, in its
`toy/models/<tag>/`. The cache key holds VERSION, the recipe and the prompts' PROMPT_VERSION.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rlkd.build.records import Record
from rlkd.gsrm.prompts import PROMPT_VERSION, judge_messages, sft_record
from rlkd.gsrm.steps import format_steps, parse_steps
from rlkd.gsrm.types import Decomposer, DecomposeRequest, Failure, Judge, Kind, Question
from rlkd.store.base import Store
from rlkd.toy import arithmetic
from rlkd.toy.model import CORPUS, Shape, build_model, train_tokenizer
from rlkd.toy.refs import cached_model
from rlkd.toy.student import random_order

VERSION = "1"
"""Bump when the builders change in a way the recipes do not show."""
CACHE_ENV = "RLKD_TEST_MODELS"
KINDS: tuple[Kind, ...] = ("meta", "subproblem", "answer")


@dataclass(frozen=True)
class MiniRecipe:
    """How one mini model is made: its shape, and its SFT (spec.gsrm.build.training's fields)."""

    steps: int
    learning_rate: float
    batch_size: int
    max_positions: int
    shape: Shape = field(default_factory=Shape)
    vocab_size: int = 1024
    completion_only_loss: bool = True
    """False: the loss is on the prompt too."""
    tokenizer_examples: int = 300
    """Examples whose text the tokenizer learns its merges from."""
    seed: int = 0


GSRM_RECIPE = MiniRecipe(steps=150, learning_rate=3e-3, batch_size=8, max_positions=2048)
"""Prompts are ~520 tokens (the decompose prompt's system text and worked example) plus the
path; 2048 positions leave room for a rambling student path and the decomposition."""
JUDGE_RECIPE = MiniRecipe(
    steps=1500, learning_rate=3e-3, batch_size=16, max_positions=512, completion_only_loss=False
)
"""Trained on the answer alone (1500 steps of 16), the judge learnt only the shortcut "a step
that picks a group differs, an addition does not" (0.5 right where that says nothing); with the
loss on the questions too it copies the first text into the second, which builds the attention
that compares them: measured 0.59 right on 400 held-out questions where no shortcut helps
(`held_out_questions`), 0.67 on questions drawn like its training data."""


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rlkd-tests")


def mini_gsrm(
    cache: Path | None = None, store: Store | None = None, recipe: MiniRecipe = GSRM_RECIPE
) -> Path:
    """The mini GSRM's save_pretrained folder: cached, else downloaded from `store`, else built."""
    return _cached("mini-gsrm", gsrm_records, recipe, cache, store)


def mini_judge(
    cache: Path | None = None, store: Store | None = None, recipe: MiniRecipe = JUDGE_RECIPE
) -> Path:
    """The mini judge's save_pretrained folder: cached, else downloaded from `store`, else built."""
    return _cached("mini-judge", judge_records, recipe, cache, store)


# The training data.


def decompose_request(problem: arithmetic.Problem, order: Sequence[int]) -> DecomposeRequest:
    return DecomposeRequest(arithmetic.reasoning(problem, order), problem.text, "math")


def gsrm_records(problems: Sequence[arithmetic.Problem], count: int, seed: int) -> list[Record]:
    """`count` GSRM records: a problem's path in a random valid order -> its steps."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        request = decompose_request(*_path(problems, rng))
        records.append(sft_record(request, format_steps(parse_steps(request.reasoning))))
    return records


def judge_question(
    problems: Sequence[arithmetic.Problem], rng: random.Random, same: bool, picks: float = 0.75
) -> Question:
    """A judge question whose right answer is `same`: one part (meta, sub-problem or answer) of
    one step of two valid paths of a problem. Only steps that pick a group can differ; `picks`
    of the questions answered yes are about such steps too, so that "the step picks a group"
    tells little about the answer (with 1.0, nothing: only comparing the texts does)."""
    pick = rng.random() < picks or not same
    while True:
        problem, first = _path(problems, rng)
        second = random_order(problem, rng)
        index = rng.randrange(2 * len(problem.groups) - 1)  # groups, then additions
        if (index < len(problem.groups)) != pick:
            continue
        kind = rng.choice(KINDS)
        teacher, student = (
            getattr(parse_steps(arithmetic.reasoning(problem, order))[index], kind)
            for order in (first, second)
        )
        if (teacher == student) == same:
            return Question(kind, teacher, student)


def judge_records(problems: Sequence[arithmetic.Problem], count: int, seed: int) -> list[Record]:
    """`count` judge records, yes and no alternating."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        question = judge_question(problems, rng, same=n % 2 == 0)
        verdict = "yes" if question.teacher == question.student else "no"
        records.append(
            {
                "prompt": judge_messages(question),
                "completion": [{"role": "assistant", "content": verdict}],
            }
        )
    return records


def _path(
    problems: Sequence[arithmetic.Problem], rng: random.Random
) -> tuple[arithmetic.Problem, tuple[int, ...]]:
    problem = rng.choice(problems)
    return problem, random_order(problem, rng)


# The build.

Records = Callable[[Sequence[arithmetic.Problem], int, int], list[Record]]


def _cached(
    name: str, records: Records, recipe: MiniRecipe, cache: Path | None, store: Store | None
) -> Path:
    about = {"version": VERSION, "prompts": PROMPT_VERSION, **dataclasses.asdict(recipe)}
    digest = hashlib.sha256(repr(sorted(about.items())).encode()).hexdigest()[:12]
    return cached_model(
        f"{name}-{VERSION}-{digest}",
        store,
        cache or cache_dir(),
        lambda path: build(path, records, recipe),
        recipe=about,
    )


def build(path: Path, records: Records, recipe: MiniRecipe) -> Path:
    """A tiny Qwen2 with a tokenizer of the records' text, fine-tuned on `records` by the GSRM
    build's SFT, written to `path` (which must not exist)."""
    from trl import SFTConfig

    from rlkd.build.config import sft_arguments
    from rlkd.build.sft import save_trained, sft_trainer
    from rlkd.spec.job import RLKDJobSpec
    from rlkd.train.config import Placement
    from tests.gsrm_build import build_job_document

    problems = arithmetic.problems("train", 2000, seed=recipe.seed)
    examples = records(problems, recipe.tokenizer_examples, recipe.seed)
    corpus = [*CORPUS, *(m["content"] for r in examples for m in r["prompt"] + r["completion"])]
    tokenizer = train_tokenizer(corpus, vocab_size=recipe.vocab_size)
    with tempfile.TemporaryDirectory(prefix="mini-") as work:
        base = build_model(
            Path(work, "base"),
            tokenizer=tokenizer,
            shape=recipe.shape,
            seed=recipe.seed,
            max_positions=recipe.max_positions,
            checks=corpus[:: max(1, len(corpus) // 50)],
        )
        training = {
            "maxSteps": recipe.steps,
            "learningRate": recipe.learning_rate,
            "lrSchedulerType": "linear",
            "warmupRatio": 0.05,
            "perDeviceTrainBatchSize": recipe.batch_size,
            "maxLength": recipe.max_positions,
            "saveSteps": recipe.steps + 1,  # no checkpoint: a failed build is built again
            "seed": recipe.seed,
        }
        document = build_job_document("mini", str(base), **training)
        spec = RLKDJobSpec.model_validate(document["spec"], by_name=False)
        placement = Placement(output_dir=str(Path(work, "sft")), cuda=False)
        config = SFTConfig(
            **sft_arguments(spec, placement) | {"completion_only_loss": recipe.completion_only_loss}
        )
        rows = records(problems, recipe.steps * recipe.batch_size, recipe.seed + 1)
        trainer = sft_trainer(str(base), rows, config, bars=True)
        trainer.train()
        shutil.move(save_trained(trainer, config), path)
    return path


def held_out_problems(count: int) -> list[arithmetic.Problem]:
    """Problems of the toy domain's held-out split (never trained on)."""
    return arithmetic.problems("test", count)


def held_out_paths(count: int, seed: int = 7) -> list[DecomposeRequest]:
    """`count` decompose requests of held-out problems' paths in random valid orders."""
    rng = random.Random(seed)
    problems = held_out_problems(200)
    return [decompose_request(*_path(problems, rng)) for _ in range(count)]


def held_out_questions(count: int, seed: int = 7) -> list[Question]:
    """`count` judge questions about held-out problems' steps that pick a group, yes and no
    alternating: one can only be right more than half of the time by comparing the texts."""
    rng = random.Random(seed)
    problems = held_out_problems(200)
    return [judge_question(problems, rng, n % 2 == 0, picks=1.0) for n in range(count)]


# What they are worth, measured the same way through any backend.


@dataclass(frozen=True)
class MeasuredGSRM:
    """The GSRM on held-out paths: shares of paths whose decomposition parses (has steps), has
    the path's number of steps, and is the path's steps exactly; failures by reason."""

    paths: int
    parse_rate: float
    step_count: float
    exact: float
    failures: dict[str, int]


async def gsrm_quality(decomposer: Decomposer, count: int) -> MeasuredGSRM:
    """Decompose `count` held-out paths (`held_out_paths`) with `decomposer`."""
    requests = held_out_paths(count)
    results = await decomposer.decompose(requests)
    failures = Counter(r.reason for r in results if isinstance(r, Failure))
    pairs = [
        (steps, parse_steps(request.reasoning))
        for request, steps in zip(requests, results, strict=True)
        if not isinstance(steps, Failure)
    ]
    return MeasuredGSRM(
        paths=count,
        parse_rate=sum(bool(steps) for steps, _ in pairs) / count,
        step_count=sum(len(steps) == len(path) for steps, path in pairs) / count,
        exact=sum(steps == path for steps, path in pairs) / count,
        failures=dict(failures),
    )


async def judge_accuracy(judge: Judge, count: int) -> tuple[float, float]:
    """(share of verdicts read, share right) on `count` held-out questions (`held_out_questions`:
    a judge that always says yes, or no, is right on half of them)."""
    questions = held_out_questions(count)
    verdicts = await judge.judge(questions)
    read = [v for v in verdicts if isinstance(v, bool)]
    right = sum(v is (q.teacher == q.student) for q, v in zip(questions, verdicts, strict=True))
    return len(read) / count, right / count
