"""`rlkd eval`: accuracy (math-verify) and mean structure alignment of a model on held-out
problems, decoded greedily, so before and after training compare on the same footing (sampled
rewards during GRPO understate greedy accuracy).

Structure alignment of one problem is its structure reward divided by the teacher's step count
(0..1): 1 when the student takes the teacher's steps in the teacher's order and solves each the
same way. A problem whose structure could not be scored (a backend failure) is counted by reason
and left out of the mean, never scored 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlkd.data import Example, Record, examples, prompt_messages
from rlkd.gsrm.backends.chat import ChatModel, Reply
from rlkd.gsrm.engine import ScoreItem, StructureEngine
from rlkd.gsrm.steps import parse_steps
from rlkd.gsrm.types import DecomposeRequest, Failure, Step
from rlkd.rewards import accuracy
from rlkd.spec.job import RLKDJobSpec
from rlkd.spec.progress import EVALUATION_KEY, EvaluationName, EvaluationSummary
from rlkd.store.base import Store


@dataclass
class Evaluation:
    summary: EvaluationSummary
    rows: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary.to_dict(), "rows": self.rows}


async def evaluate(
    spec: RLKDJobSpec,
    records: Sequence[Record],
    chat: ChatModel,
    *,
    engine: StructureEngine | None,
    model: str,
    batch_size: int = 64,
    progress: Any = None,
) -> Evaluation:
    """Greedy replies of `chat` to every problem, scored for accuracy and, with `engine`, for
    structure alignment against the teacher's decomposition. `progress` (a tqdm bar) is
    advanced per problem."""
    items = examples(records, spec)
    max_tokens = spec.evaluation.max_completion_length if spec.evaluation else None
    max_tokens = max_tokens or spec.grpo.max_completion_length
    replies: list[Reply | Failure] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        replies += await chat.chat([prompt_messages(spec, e.problem) for e in batch], max_tokens)
        if progress is not None:
            progress.update(len(batch))
    texts = [r.text if isinstance(r, Reply) else "" for r in replies]
    errors: Counter[str] = Counter(r.reason for r in replies if isinstance(r, Failure))
    correct = accuracy(texts, [e.answer for e in items])
    alignments: list[float | None] = [None] * len(items)
    teacher_steps: list[int | None] = [None] * len(items)
    if engine is not None:
        alignments, teacher_steps, structure_errors = await _alignments(
            spec, engine, items, texts, replies
        )
        errors.update(structure_errors)
    rows = [
        {
            "problem": e.problem,
            "answer": e.answer,
            "completion": text,
            "correct": c,
            "teacher_steps": n,
            "alignment": a,
        }
        for e, text, c, n, a in zip(items, texts, correct, teacher_steps, alignments, strict=True)
    ]
    scored = [a for a in alignments if a is not None]
    graded = [c for c in correct if c is not None]
    summary = EvaluationSummary(
        accuracy=sum(graded) / len(graded) if graded else 0.0,
        structure=sum(scored) / len(scored) if engine is not None and scored else None,
        examples=len(items),
        errors=dict(sorted(errors.items())),
        model=model,
    )
    return Evaluation(summary, rows)


async def _alignments(
    spec: RLKDJobSpec,
    engine: StructureEngine,
    items: Sequence[Example],
    texts: Sequence[str],
    replies: Sequence[Reply | Failure],
) -> tuple[list[float | None], list[int | None], Counter[str]]:
    """Structure reward / teacher steps per problem (None where it could not be computed)."""
    if spec.teacher.source == "decompositions":
        teachers: list[list[Step] | Failure] = [parse_steps(e.teacher) for e in items]
    else:
        teachers = await engine.teachers.steps(
            [DecomposeRequest(e.teacher, e.problem, e.domain) for e in items]
        )
    errors: Counter[str] = Counter(t.reason for t in teachers if isinstance(t, Failure))
    scorable = [
        i
        for i, (t, r) in enumerate(zip(teachers, replies, strict=True))
        if not isinstance(t, Failure) and t and not isinstance(r, Failure)
    ]
    result = await engine.score(
        [
            ScoreItem(texts[i], tuple(teachers[i]), items[i].problem, items[i].domain)  # type: ignore[arg-type]
            for i in scorable
        ]
    )
    errors.update(result.errors)
    alignments: list[float | None] = [None] * len(items)
    steps = [None if isinstance(t, Failure) else len(t) for t in teachers]
    for i, reward in zip(scorable, result.rewards, strict=True):
        n = steps[i]
        alignments[i] = None if reward is None or not n else reward / n
    for i, (t, r) in enumerate(zip(teachers, replies, strict=True)):
        if not isinstance(t, Failure) and not t and not isinstance(r, Failure):
            alignments[i] = 0.0  # a teacher without steps: the method's reward is 0
    return alignments, steps, errors


def save_evaluation(store: Store, name: EvaluationName | str, evaluation: Evaluation) -> str:
    """Merge one evaluation into the run's `evaluation.json`; returns its URI."""
    doc = store.get_json(EVALUATION_KEY) if store.exists(EVALUATION_KEY) else {}
    doc[name] = evaluation.to_dict()
    store.put_json(EVALUATION_KEY, doc)
    return store.uri_for(EVALUATION_KEY)
