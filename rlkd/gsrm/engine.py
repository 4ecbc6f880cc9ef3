"""The structure-reward engine: scores a whole GRPO batch with as few backend calls as the
method allows, and returns infrastructure failures as counts instead of rewards.

Per batch: one decomposer call for the student texts and, at the same time, at most one for the
teacher texts not yet cached, then one judge call per round (see `rlkd.gsrm.reward`). Teacher
decompositions depend only on the example (the GSRM runs greedily), so they are cached in memory
for the run and in the store, content-addressed by GSRM model id, prompt version, domain,
problem and teacher text; a failed decomposition is never cached.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rlkd.errors import BackendError, ObjectNotFoundError
from rlkd.gsrm.loop import run_sync
from rlkd.gsrm.prompts import PROMPT_VERSION
from rlkd.gsrm.reward import Alignment, judge_rounds
from rlkd.gsrm.steps import thinking
from rlkd.gsrm.types import Decomposer, DecomposeRequest, Decomposition, Failure, Judge, Step
from rlkd.spec.job import Domain
from rlkd.store.base import Store
from rlkd.store.cache import cache_entry

CACHE_NAMESPACE = "gsrm-teacher"


@dataclass(frozen=True)
class ScoreItem:
    """One completion to score, with its example's teacher side.

    `teacher` is the teacher's reasoning text (decomposed by the GSRM, cached) or its steps,
    precomputed with the dataset (teacher.source decompositions).
    """

    completion: str
    teacher: str | Sequence[Step]
    problem: str = ""
    domain: Domain = "math"


@dataclass
class BatchResult:
    """One reward per item (None: not computable) and, by failure reason, how
    many items got None because of it (an item counts once per distinct reason)."""

    rewards: list[float | None]
    errors: dict[str, int] = field(default_factory=dict)


class StructureEngine:
    """Scores completions against their teachers' structure with a GSRM and a judge."""

    def __init__(self, decomposer: Decomposer, judge: Judge, store: Store | None = None) -> None:
        self.decomposer = decomposer
        self.judge = judge
        self.teachers = TeacherCache(decomposer, store)

    async def score(self, items: Sequence[ScoreItem]) -> BatchResult:
        """The structure reward of every item; an empty decomposition scores 0, an item hit by
        any backend failure gets None and its reasons are counted."""
        texts = [
            DecomposeRequest(i.teacher, i.problem, i.domain)
            for i in items
            if isinstance(i.teacher, str)
        ]
        # The two sides are independent: one decomposer call each, in flight together.
        students, teacher_results = await asyncio.gather(
            decompose_distinct(
                self.decomposer,
                [DecomposeRequest(thinking(i.completion), i.problem, i.domain) for i in items],
            ),
            self.teachers.steps(texts),
        )
        decomposed = iter(teacher_results)
        teachers = [next(decomposed) if isinstance(i.teacher, str) else i.teacher for i in items]

        # A side that failed to decompose leaves nothing to judge: an empty alignment that
        # asks no question, whose item gets None below.
        alignments = [
            Alignment(teacher, student)
            if not isinstance(teacher, Failure) and not isinstance(student, Failure)
            else Alignment((), ())
            for teacher, student in zip(teachers, students, strict=True)
        ]
        await judge_rounds(alignments, self.judge)

        failed = [
            {d.reason for d in (teacher, student) if isinstance(d, Failure)} | alignment.failures
            for teacher, student, alignment in zip(teachers, students, alignments, strict=True)
        ]
        rewards = [None if f else a.reward for f, a in zip(failed, alignments, strict=True)]
        errors = Counter(reason for reasons in failed for reason in reasons)
        return BatchResult(rewards, dict(sorted(errors.items())))

    def score_sync(self, items: Sequence[ScoreItem]) -> BatchResult:
        """`score` for sync callers (TRL reward functions), with or without a running loop."""
        return run_sync(self.score(items))


class TeacherCache:
    """Teacher decompositions, computed at most once per example: in memory for the run, and in
    `store` (when given) across runs and processes, so a prepare phase can fill it ahead."""

    def __init__(self, decomposer: Decomposer, store: Store | None = None) -> None:
        self.decomposer = decomposer
        self.store = store
        self._known: dict[DecomposeRequest, tuple[Step, ...]] = {}

    async def steps(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
        """Teacher decompositions of the thinking in `requests`, from memory, then the store,
        decomposing the rest in one call (each distinct text once) and caching every success
        in both."""
        requests = [DecomposeRequest(thinking(r.reasoning), r.problem, r.domain) for r in requests]
        missing = [r for r in dict.fromkeys(requests) if r not in self._known]
        if self.store is not None and missing:
            found = await asyncio.to_thread(self._load, self.store, missing)
            self._known.update(found)
            missing = [r for r in missing if r not in found]
        results = dict(
            zip(missing, await decompose_distinct(self.decomposer, missing), strict=True)
        )
        fresh = {r: tuple(d) for r, d in results.items() if not isinstance(d, Failure)}
        if self.store is not None and fresh:
            await asyncio.to_thread(self._save, self.store, fresh)
        self._known.update(fresh)
        return [list(self._known[r]) if r in self._known else results[r] for r in requests]

    def _cache_inputs(self, request: DecomposeRequest) -> dict[str, str]:
        return {
            "model": self.decomposer.model_id,
            "prompt": PROMPT_VERSION,
            "domain": request.domain,
            "problem": request.problem,
            "reasoning": request.reasoning,
        }

    def _load(
        self, store: Store, requests: Sequence[DecomposeRequest]
    ) -> dict[DecomposeRequest, tuple[Step, ...]]:
        found = {}
        for request in requests:
            try:
                doc = store.get_json(cache_entry(CACHE_NAMESPACE, self._cache_inputs(request)))
            except ObjectNotFoundError:
                continue
            found[request] = tuple(Step(**step) for step in doc["steps"])
        return found

    def _save(self, store: Store, decompositions: dict[DecomposeRequest, tuple[Step, ...]]) -> None:
        for request, steps in decompositions.items():
            key = cache_entry(CACHE_NAMESPACE, self._cache_inputs(request))
            store.put_json(key, {"steps": [vars(step) for step in steps]})


async def decompose_distinct(
    decomposer: Decomposer, requests: Sequence[DecomposeRequest]
) -> list[Decomposition]:
    """Decompose each distinct non-empty text once, in one call; an empty text has no steps and
    needs no GSRM."""
    unique = [r for r in dict.fromkeys(requests) if r.reasoning.strip()]
    results = await decomposer.decompose(unique) if unique else []
    if len(results) != len(unique):
        raise BackendError(
            f"the decomposer returned {len(results)} results for {len(unique)} requests; "
            "a Decomposer must return one result per request, in order"
        )
    by_request = dict(zip(unique, results, strict=True))
    return [by_request.get(r, []) for r in requests]


async def precompute_teachers(
    cache: TeacherCache, requests: Sequence[DecomposeRequest], *, batch_size: int = 64
) -> dict[str, int]:
    """Decompose and cache the teacher side of a whole dataset before training (a prepare
    phase), `batch_size` requests per decomposer call; returns failures by reason ({} when
    every decomposition is cached)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    errors: Counter[str] = Counter()
    for start in range(0, len(requests), batch_size):
        results = await cache.steps(requests[start : start + batch_size])
        errors.update(d.reason for d in results if isinstance(d, Failure))
    return dict(sorted(errors.items()))
