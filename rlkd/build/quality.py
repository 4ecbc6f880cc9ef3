"""`rlkd eval-gsrm`: the quality gate of a built GSRM. Before a GSRM scores a training run, it
decomposes the held-out annotations' reasoning, greedily and from exactly the prompt it was
trained on (each record's own prompt), and is compared with the annotator:

- parse rate: its reply parses into at least one step (a reply cut at the token budget does not);
- step-count agreement: it wrote as many steps as the annotator;
- step agreement (when the gate asks for it: rlkd.spec.progress.gate_judges): for i up to
  min(n, m), the judge says the i-th sub-problems
  are the same (the reward engine's own question and prompt); per example the agreed share of
  the annotator's n steps, averaged. A judge failure is counted and its example left out.

The report lands in the store before the gate's verdict is acted on.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlkd.build.config import gsrm_build
from rlkd.build.records import Record, read_records, split_held_out
from rlkd.errors import RLKDError
from rlkd.gsrm.backends.chat import ChatModel, Reply
from rlkd.gsrm.steps import parse_steps
from rlkd.gsrm.types import Decomposition, Failure, Judge, Question, Step
from rlkd.models import local_model
from rlkd.spec.job import GSRMGateSpec
from rlkd.spec.progress import (
    ANNOTATIONS_PREFIX,
    GSRM_BUILD_PREFIX,
    GSRM_EVALUATION_KEY,
    PROGRESS_KEY,
    GSRMEvaluation,
    GSRMEvaluationRow,
    ProgressDocument,
    gate_judges,
)
from rlkd.spec.resource import RLKDJob
from rlkd.store.base import SubStore
from rlkd.store.job import JobStores
from rlkd.train.progress import Say

GATE_FIELD = "spec.gsrm.build.gate"


class GateFailed(RLKDError):
    """The built GSRM misses spec.gsrm.build.gate (the report is in the store)."""


def evaluate_gsrm(
    job: RLKDJob,
    stores: JobStores,
    *,
    cache_dir: Path,
    model: str | None = None,
    env: Mapping[str, str] = os.environ,
    say: Say = print,
    bars: bool = False,
) -> GSRMEvaluation:
    """Grade the GSRM at `model` (default spec.gsrm.model) on the held-out annotations, write
    the report, print a table; raise GateFailed when it misses the gate."""
    spec = job.spec
    build = gsrm_build(spec)
    assert spec.gsrm is not None  # gsrm_build checked it
    store = SubStore(stores.run, GSRM_BUILD_PREFIX)
    _, held_out = split_held_out(read_records(store), build.held_out, build.training.seed)
    if not held_out:
        raise RLKDError(
            f"no held-out annotations in {store.uri_for(ANNOTATIONS_PREFIX.rstrip('/'))}: run "
            "`rlkd annotate` first (eval-gsrm checks the GSRM against its held-out records)"
        )
    ref = model or spec.gsrm.model or ""
    model_dir = local_model(ref, stores, cache_dir, field="--model" if model else "spec.gsrm.model")

    from rlkd.gsrm.backends import build_judge
    from rlkd.gsrm.backends.transformers import TransformersChat

    request = spec.gsrm.request
    chat = TransformersChat(model_dir, batch_size=request.max_concurrency)
    judge = build_judge(spec.judge, env=env) if spec.judge and gate_judges(spec) else None
    say(f"eval-gsrm: {ref} on {len(held_out)} held-out annotations")

    async def run() -> GSRMEvaluation:
        bar = _bar(len(held_out)) if bars else None
        try:
            replies = await decompose(
                chat, held_out, request.max_tokens, request.max_concurrency, bar
            )
            return await grade(held_out, replies, judge, model=ref, gate=build.gate)
        finally:
            if bar is not None:
                bar.close()
            close = getattr(getattr(judge, "model", None), "aclose", None)
            if close is not None:
                await close()

    evaluation = asyncio.run(run())
    store.put_json(GSRM_EVALUATION_KEY, evaluation.model_dump(mode="json", by_alias=True))
    if ref == spec.gsrm.model:  # another --model's verdict is not the build's
        _record_verdict(store, evaluation)
    say(table(evaluation, build.gate, judged=judge is not None))
    say(f"written to {store.uri_for(GSRM_EVALUATION_KEY)}")
    if not evaluation.passed:
        raise GateFailed("the GSRM misses its gate: " + "; ".join(evaluation.gate_failures))
    return evaluation


async def decompose(
    chat: ChatModel,
    records: Sequence[Record],
    max_tokens: int,
    batch_size: int,
    progress: Any = None,
) -> list[Reply | Failure]:
    """The GSRM's greedy replies to each record's prompt (the serving prompt it was trained
    on), `batch_size` at a time; `progress` (a tqdm bar) advances per record."""
    replies: list[Reply | Failure] = []
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        replies += await chat.chat([r["prompt"] for r in batch], max_tokens)
        if progress is not None:
            progress.update(len(batch))
    return replies


def annotator_steps(record: Record) -> list[Step]:
    """The annotator's decomposition: the record's completion, as the GSRM was trained on it."""
    return parse_steps(record["completion"][-1]["content"])


def reply_steps(reply: Reply | Failure) -> Decomposition:
    """The GSRM's steps, read as the reward engine's decomposer reads them: a reply cut at the
    token budget is Failure("token_limit"), not a shorter decomposition."""
    if isinstance(reply, Failure):
        return reply
    if reply.truncated:
        return Failure("token_limit", "the decomposition was cut at gsrm.request.maxTokens")
    return parse_steps(reply.text)


def step_questions(expected: Sequence[Step], got: Sequence[Step]) -> list[Question | None]:
    """For i < min(n, m): the judge's sub-problem question, or None when either side left the
    sub-problem empty (then the steps do not agree, and nothing is asked)."""
    return [
        Question("subproblem", a.subproblem, b.subproblem)
        if a.subproblem and b.subproblem
        else None
        for a, b in zip(expected, got, strict=False)
    ]


async def grade(
    records: Sequence[Record],
    replies: Sequence[Reply | Failure],
    judge: Judge | None,
    *,
    model: str,
    gate: GSRMGateSpec,
) -> GSRMEvaluation:
    """The report for the GSRM's `replies` to `records` (in order), with the gate's verdict.
    Every distinct judge question goes in one call."""
    expected = [annotator_steps(r) for r in records]
    got = [reply_steps(reply) for reply in replies]
    asked = [
        step_questions(e, [] if isinstance(g, Failure) else g)
        for e, g in zip(expected, got, strict=True)
    ]
    distinct = list(dict.fromkeys(q for questions in asked for q in questions if q is not None))
    verdicts: dict[Question, bool | Failure] = {}
    if judge is not None and distinct:
        answers = await judge.judge(distinct)
        if len(answers) != len(distinct):
            raise RLKDError(
                f"the judge returned {len(answers)} verdicts for {len(distinct)} questions"
            )
        verdicts = dict(zip(distinct, answers, strict=True))
    rows = [
        _row(str(record["id"]), e, g, questions, verdicts if judge is not None else None)
        for record, e, g, questions in zip(records, expected, got, asked, strict=True)
    ]
    return _summary(rows, model=model, gate=gate, judged=judge is not None)


def _row(
    id_: str,
    expected: list[Step],
    got: Decomposition,
    questions: list[Question | None],
    verdicts: dict[Question, bool | Failure] | None,
) -> GSRMEvaluationRow:
    steps = 0 if isinstance(got, Failure) else len(got)
    error = got.reason if isinstance(got, Failure) else None
    agreed = None
    if verdicts is not None:
        answers = [verdicts[q] if q is not None else False for q in questions]
        failed = [a.reason for a in answers if isinstance(a, Failure)]
        if failed:
            error = f"judge_{failed[0]}"
        else:
            agreed = sum(1 for a in answers if a is True)
    return GSRMEvaluationRow(
        id=id_, annotator_steps=len(expected), gsrm_steps=steps, agreed_steps=agreed, error=error
    )


def _summary(
    rows: list[GSRMEvaluationRow], *, model: str, gate: GSRMGateSpec, judged: bool
) -> GSRMEvaluation:
    count = max(len(rows), 1)
    scored = [r for r in rows if r.agreed_steps is not None]
    agreement = (
        sum((r.agreed_steps or 0) / max(r.annotator_steps, 1) for r in scored) / len(scored)
        if scored
        else None
    )
    report = GSRMEvaluation(
        model=model,
        examples=len(rows),
        parse_rate=sum(1 for r in rows if r.gsrm_steps > 0) / count,
        step_count_agreement=sum(1 for r in rows if r.gsrm_steps == r.annotator_steps) / count,
        step_agreement=agreement,
        errors=dict(sorted(Counter(r.error for r in rows if r.error).items())),
        passed=True,
        rows=rows,
    )
    failures = gate_failures(report, gate, judged=judged)
    return report.model_copy(update={"passed": not failures, "gate_failures": failures})


def gate_failures(report: GSRMEvaluation, gate: GSRMGateSpec, *, judged: bool) -> list[str]:
    """Each gate `report` misses, as metric, value, threshold and field; per-step agreement is
    gated only when a judge measured it."""
    checks = [
        ("parse rate", report.parse_rate, gate.min_parse_rate, "minParseRate"),
        (
            "step-count agreement",
            report.step_count_agreement,
            gate.min_step_count_agreement,
            "minStepCountAgreement",
        ),
    ]
    failures = [
        f"{metric} {value:.3f} is below {threshold:g} ({GATE_FIELD}.{field})"
        for metric, value, threshold, field in checks
        if value < threshold
    ]
    if not judged or gate.min_step_agreement == 0:
        return failures
    unjudged = [r for r in report.rows if r.agreed_steps is None]
    if unjudged:
        failures.append(
            f"step agreement could not be measured on {len(unjudged)} of {report.examples} "
            f"held-out annotations (the judge failed; see errors): check spec.judge and run "
            f"eval-gsrm again ({GATE_FIELD}.minStepAgreement {gate.min_step_agreement:g})"
        )
    elif report.step_agreement is not None and report.step_agreement < gate.min_step_agreement:
        failures.append(
            f"step agreement {report.step_agreement:.3f} is below {gate.min_step_agreement:g} "
            f"({GATE_FIELD}.minStepAgreement)"
        )
    return failures


def table(report: GSRMEvaluation, gate: GSRMGateSpec, *, judged: bool) -> str:
    """The report's numbers against the gate, for the terminal."""
    lines = [f"{'metric':<22}{'value':>8}  gate"]
    rows: list[tuple[str, float | None, float, str]] = [
        ("parse rate", report.parse_rate, gate.min_parse_rate, ""),
        ("step-count agreement", report.step_count_agreement, gate.min_step_count_agreement, ""),
        (
            "step agreement",
            report.step_agreement,
            gate.min_step_agreement,
            "" if judged else "not measured: minStepAgreement is 0",
        ),
    ]
    for metric, value, threshold, note in rows:
        shown = "-" if value is None else f"{value:.3f}"
        verdict = note or ("ok" if value is not None and value >= threshold else "FAIL")
        lines.append(f"{metric:<22}{shown:>8}  >= {threshold:<7g}{verdict}")
    if report.errors:
        lines.append("errors: " + ", ".join(f"{k} {v}" for k, v in report.errors.items()))
    lines.append(f"gate: {'passed' if report.passed else 'FAILED'} on {report.examples} examples")
    return "\n".join(lines)


def _record_verdict(store: SubStore, evaluation: GSRMEvaluation) -> None:
    """The gate's verdict in the build's progress document: a GSRM that misses the gate is not a
    finished build (the operator, and a job applied again, must not take it for one)."""
    if not store.exists(PROGRESS_KEY):
        return
    doc = ProgressDocument.model_validate(store.get_json(PROGRESS_KEY), by_name=False)
    failure = (
        None
        if evaluation.passed
        else "the GSRM misses its gate: " + "; ".join(evaluation.gate_failures)
    )
    if doc.failure != failure:
        store.put_json(PROGRESS_KEY, doc.model_copy(update={"failure": failure}).to_dict())


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="eval-gsrm", unit="record", leave=False)
