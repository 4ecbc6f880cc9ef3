"""The prepare phase (`rlkd prepare`): the teacher side of the structure reward decomposed and
cached in the job's store before training, for the training rows and the evaluation rows alike,
so the learner's steps wait for no teacher decomposition, and a GSRM that cannot serve shows up
before GPU hours go to the learner.

With `teacher.source: model` it first samples one reasoning path per example from the teacher
(at `teacher.temperature`, once: the path is cached in the store), keeps only the paths whose
answer math-verify marks correct, as the method does, and leaves the other examples out (counted).

It writes exactly the entries the learner's `TeacherCache` reads (same store, same keys).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rlkd.data import Record, evaluation_records, examples, prompt_messages, training_records
from rlkd.errors import ObjectNotFoundError, SpecError
from rlkd.gsrm.backends import LocalModel, build_decomposer, chat_model
from rlkd.gsrm.backends.chat import ChatModel, Reply
from rlkd.gsrm.engine import TeacherCache, precompute_teachers
from rlkd.gsrm.loop import run_sync
from rlkd.gsrm.steps import thinking
from rlkd.gsrm.types import Decomposer, DecomposeRequest, Decomposition, Failure
from rlkd.rewards import accuracy
from rlkd.spec.progress import (
    PREPARE_KEY,
    PrepareSummary,
    needs_decompositions,
    needs_prepare,
    nothing_to_prepare,
)
from rlkd.spec.resource import RLKDJob
from rlkd.store.base import Store
from rlkd.store.cache import cache_entry
from rlkd.store.job import JobStores

PATHS_NAMESPACE = "teacher-paths"


def prepared_records(job: RLKDJob, stores: JobStores) -> list[Record]:
    """Every row whose teacher side the run will need: training, then evaluation."""
    rows = training_records(job.spec, stores)
    if job.spec.evaluation is not None:
        rows += evaluation_records(job.spec, stores, job.spec.evaluation)
    return rows


def _path_key(job: RLKDJob, model_id: str, problem: str) -> str:
    spec = job.spec
    return cache_entry(
        PATHS_NAMESPACE,
        {
            "model": model_id,
            "temperature": repr(spec.teacher.temperature),
            "system": spec.grpo.system_prompt,
            "problem": problem,
        },
    )


def teacher_model_id(job: RLKDJob) -> str:
    model = job.spec.teacher.model
    if model is None:
        raise SpecError(["spec.teacher.model: is required when teacher.source is model"])
    return model.model or model.served_model_name or "teacher"


def sample_teacher_paths(
    job: RLKDJob,
    stores: JobStores,
    records: Sequence[Record],
    chat: ChatModel,
    *,
    batch_size: int = 64,
) -> dict[str, int]:
    """Sample (once) and cache one teacher path per example of `records` (prepared_records);
    returns counts: sampled, cached (from an earlier run), kept (a correct answer), rejected
    (a wrong one) and failed_<reason> (not cached, sampled again next time)."""
    spec = job.spec
    model_id = teacher_model_id(job)
    rows = list({e.problem: e for e in examples(records, spec)}.values())
    counts: Counter[str] = Counter()
    todo = []
    for example in rows:
        try:
            entry = stores.run.get_json(_path_key(job, model_id, example.problem))
        except ObjectNotFoundError:
            todo.append(example)
            continue
        counts["cached"] += 1
        counts["kept" if entry.get("correct") else "rejected"] += 1
    max_tokens = spec.teacher.model.request.max_tokens if spec.teacher.model else 4096

    async def sample(batch: Sequence[Any]) -> list[Reply | Any]:
        conversations = [prompt_messages(spec, e.problem) for e in batch]
        return await chat.chat(conversations, max_tokens, temperature=spec.teacher.temperature)

    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        replies = run_sync(sample(batch))
        texts = [r.text if isinstance(r, Reply) and not r.truncated else None for r in replies]
        correct = accuracy([t or "" for t in texts], [e.answer for e in batch])
        for example, reply, text, right in zip(batch, replies, texts, correct, strict=True):
            if text is None:
                reason = "token_limit" if isinstance(reply, Reply) else reply.reason
                counts[f"failed_{reason}"] += 1
                continue
            counts["sampled"] += 1
            counts["kept" if right else "rejected"] += 1
            stores.run.put_json(
                _path_key(job, model_id, example.problem),
                {"path": thinking(text), "correct": bool(right)},
            )
    return dict(sorted(counts.items()))


def with_teacher_paths(job: RLKDJob, store: Store, records: Sequence[Record]) -> list[Record]:
    """`records` with the teacher's cached, correct path in the teacher-reasoning column; rows
    whose path is wrong or was never sampled are left out (teacher.source model only)."""
    spec = job.spec
    if spec.teacher.source != "model":
        return list(records)
    model_id = teacher_model_id(job)
    columns = spec.dataset.columns
    kept = []
    for record in records:
        try:
            entry = store.get_json(_path_key(job, model_id, str(record.get(columns.problem))))
        except ObjectNotFoundError:
            continue
        if entry.get("correct"):
            kept.append({**record, columns.teacher_reasoning: entry["path"]})
    return kept


@dataclass(frozen=True)
class Decomposed:
    """What prepare_teachers did: rows whose teacher side was needed, decompositions computed
    (the rest of the distinct texts came from the store) and failures by reason."""

    examples: int
    distinct: int
    decomposed: int
    failures: dict[str, int]


class _Counting:
    """A decomposer that counts what it was asked and what it decomposed."""

    def __init__(self, inner: Decomposer) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.asked = self.decomposed = 0

    async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
        results = await self.inner.decompose(requests)
        self.asked += len(requests)
        self.decomposed += sum(not isinstance(r, Failure) for r in results)
        return results


def prepare_teachers(
    job: RLKDJob,
    stores: JobStores,
    records: Sequence[Record],
    decomposer: Decomposer,
    *,
    batch_size: int = 64,
) -> Decomposed:
    """Decompose and cache the teacher reasoning of every example of `records`
    (prepared_records). Cached entries are not computed again."""
    records = with_teacher_paths(job, stores.run, records)
    requests = [
        DecomposeRequest(e.teacher, e.problem, e.domain) for e in examples(records, job.spec)
    ]
    counting = _Counting(decomposer)
    cache = TeacherCache(counting, stores.run)
    failures = run_sync(precompute_teachers(cache, requests, batch_size=batch_size))
    distinct = len({DecomposeRequest(thinking(r.reasoning), r.problem, r.domain) for r in requests})
    return Decomposed(len(requests), distinct, counting.decomposed, failures)


def prepare(
    job: RLKDJob,
    stores: JobStores,
    *,
    env: Mapping[str, str] = os.environ,
    batch_size: int = 64,
    say: Callable[[str], None] = print,
    local: LocalModel | None = None,
) -> PrepareSummary:
    """The whole prepare phase, as `rlkd prepare` and the learner run it: teacher paths (source
    model), then their decompositions. Its summary goes to `prepare.json` in the run's store,
    where the operator and the learner read it. `local` loads a transformers teacher or GSRM
    kept in the store (rlkd.models.model_loader)."""
    spec = job.spec
    if (reason := nothing_to_prepare(spec)) is not None:
        say(f"prepare: nothing to prepare: {reason}")
        return PrepareSummary(finished=True)
    _save(stores, PrepareSummary())
    records = prepared_records(job, stores)  # read once, for every step below
    summary = PrepareSummary(finished=True, examples=len(records))
    failed: Counter[str] = Counter()
    if spec.teacher.source == "model" and spec.teacher.model is not None:
        teacher = chat_model(spec.teacher.model, "teacher", env, local=local)
        try:
            paths = sample_teacher_paths(job, stores, records, teacher, batch_size=batch_size)
        finally:
            _close(teacher)
        counts = ", ".join(f"{k} {v}" for k, v in paths.items()) or "none"
        say(f"prepare: teacher paths ({counts}); only correct ones are used")
        failed.update({k: v for k, v in paths.items() if k.startswith("failed_")})
        summary = summary.model_copy(
            update={
                "sampled": paths.get("sampled", 0),
                "kept": paths.get("kept", 0),
                "dropped": paths.get("rejected", 0),
                "cached": paths.get("cached", 0),
            }
        )
    if needs_decompositions(spec) and spec.gsrm is not None:
        decomposer = build_decomposer(spec.gsrm, "gsrm", env, local=local)
        try:
            done = prepare_teachers(job, stores, records, decomposer, batch_size=batch_size)
        finally:
            _close(getattr(decomposer, "model", None))
        where = stores.run.uri
        say(f"prepare: teacher decompositions of {done.examples} examples cached in {where}")
        failed.update(done.failures)
        cached = done.distinct - done.decomposed - sum(done.failures.values())
        summary = summary.model_copy(
            update={"decomposed": done.decomposed, "cached": summary.cached + max(cached, 0)}
        )
    if failed:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(failed.items()))
        say(f"prepare: {sum(failed.values())} failed ({counts}); they are tried again next time")
    summary = summary.model_copy(update={"failures": dict(sorted(failed.items()))})
    _save(stores, summary)
    return summary


def prepared(stores: JobStores) -> PrepareSummary | None:
    """The summary of the last `rlkd prepare` of this run, None when none ran."""
    try:
        raw = stores.run.get_json(PREPARE_KEY)
    except ObjectNotFoundError:
        return None
    return PrepareSummary.model_validate(raw, by_name=False)


def already_prepared(job: RLKDJob, stores: JobStores) -> bool:
    """Whether the learner can skip its prepare step: nothing to prepare, or a prepare (the
    operator's prepare Job) finished with no failure, so no teacher server need be up."""
    if not needs_prepare(job.spec):
        return True
    done = prepared(stores)
    return done is not None and done.complete


def _save(stores: JobStores, summary: PrepareSummary) -> None:
    stores.run.put_json(PREPARE_KEY, summary.to_dict())


def _close(model: object) -> None:
    """Close a chat model's connections on the loop they were opened on (run_sync's)."""
    aclose = getattr(model, "aclose", None)
    if aclose is not None:
        run_sync(aclose())
