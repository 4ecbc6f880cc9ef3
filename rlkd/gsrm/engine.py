"""The structure-reward engine: scores a whole GRPO batch with as few backend calls as the
method allows, and returns infrastructure failures as counts instead of rewards.

Per batch: one decomposer call for the student texts and, at the same time, at most one for the
teacher texts not yet cached, then one judge call per round (see `rlkd.gsrm.reward`). Teacher
decompositions depend only on the example (the GSRM runs greedily), so they are cached in memory
for the run and in the store, content-addressed by GSRM model id, prompt version, domain,
problem and teacher text; a failed decomposition is never cached.

A decomposer that streams (`StreamingDecomposer`: the openai and transformers backends) hands
out each student decomposition while it writes it: the judge asks about step k while the GSRM
writes step k+1, and a stream is closed, so its generation stops, as soon as no step still to
come can change the reward of any completion that reads it. Teacher decompositions stay whole
(they are cached and reused).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rlkd.errors import BackendError, ObjectNotFoundError
from rlkd.gsrm.loop import run_sync
from rlkd.gsrm.prompts import PROMPT_VERSION
from rlkd.gsrm.reward import Alignment, judge_rounds
from rlkd.gsrm.steps import thinking
from rlkd.gsrm.types import (
    Decomposer,
    DecomposeRequest,
    Decomposition,
    Draft,
    Failure,
    Judge,
    Step,
    StepStream,
    StreamingDecomposer,
)
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
        # The two sides are independent: the students are written while the teachers are
        # looked up (and decomposed, for those not cached yet), the students' calls first.
        students = _Students(
            self.decomposer,
            [DecomposeRequest(thinking(i.completion), i.problem, i.domain) for i in items],
        )
        try:
            decomposed = iter(await asyncio.create_task(self.teachers.steps(texts)))
            teachers = [
                next(decomposed) if isinstance(i.teacher, str) else i.teacher for i in items
            ]
            # A teacher that failed to decompose leaves nothing to judge: an alignment that asks
            # no question, whose item gets None below.
            alignments = [Alignment(() if isinstance(t, Failure) else t, Draft()) for t in teachers]
            students.follow(alignments)
            await judge_rounds(alignments, self.judge, students)
        finally:
            await students.close()

        failed = [
            ({t.reason} if isinstance(t, Failure) else set()) | alignment.failures
            for t, alignment in zip(teachers, alignments, strict=True)
        ]
        rewards = [None if f else a.reward for f, a in zip(failed, alignments, strict=True)]
        errors = Counter(reason for reasons in failed for reason in reasons)
        return BatchResult(rewards, dict(sorted(errors.items())))

    async def aclose(self) -> None:
        """Close the HTTP sessions of the GSRM and judge (in-process backends have none)."""
        for part in (self.decomposer, self.judge):
            close = getattr(getattr(part, "model", None), "aclose", None)
            if close is not None:
                await close()

    def score_sync(self, items: Sequence[ScoreItem]) -> BatchResult:
        """`score` for sync callers (TRL reward functions), with or without a running loop."""
        return run_sync(self.score(items))


class _Students:
    """The student decompositions of one batch, each distinct text written once, and the
    alignments that read them (`follow`). A streaming decomposer's streams are read by one task
    each; a task is cancelled, which stops its generation, once no alignment that reads it wants
    more. Any other decomposer is called once for all, as for the teachers."""

    def __init__(self, decomposer: Decomposer, requests: Sequence[DecomposeRequest]) -> None:
        self._requests = list(requests)
        unique = [r for r in dict.fromkeys(requests) if r.reasoning.strip()]
        self._index = {r: i for i, r in enumerate(unique)}
        self._drafts: list[Draft | Failure] = [Draft()] * len(unique)
        self._followers: list[list[Alignment]] | None = None  # by text, once the teachers are known
        self._grown = asyncio.Event()
        self._tasks: dict[asyncio.Task[None], int | None] = {}  # task -> the text it writes
        if isinstance(decomposer, StreamingDecomposer):
            streams = decomposer.stream(unique)
            _check_count("streams", len(streams), len(unique))
            for index, stream in enumerate(streams):
                self._tasks[asyncio.create_task(self._read(index, stream))] = index
        elif unique:
            self._tasks[asyncio.create_task(self._decompose(decomposer, unique))] = None

    def follow(self, alignments: Sequence[Alignment]) -> None:
        """Feed each item's alignment (in item order) its student's decomposition, as far as it
        is written now and as it grows; stop the streams that no alignment wants."""
        self._followers = [[] for _ in self._drafts]
        for request, alignment in zip(self._requests, alignments, strict=True):
            index = self._index.get(request)
            if index is None:  # an empty text has no steps and needs no GSRM
                alignment.update(Draft.of([]))
                continue
            self._followers[index].append(alignment)
            _apply(self._drafts[index], alignment)
        self.judged()

    async def grown(self) -> bool:
        while not self._grown.is_set() and not all(task.done() for task in self._tasks):
            await self._grown.wait()
        for task in self._tasks:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        grown = self._grown.is_set()
        self._grown.clear()
        return grown

    def judged(self) -> None:
        for task, index in self._tasks.items():
            if index is not None and not task.done() and not self._wanted(index):
                task.cancel()

    async def close(self) -> None:
        """Stop whatever is still being written (the batch is scored, or scoring failed)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _wanted(self, index: int) -> bool:
        return self._followers is None or any(a.wants_student for a in self._followers[index])

    def _set(self, index: int, draft: Draft | Failure) -> None:
        self._drafts[index] = draft
        for alignment in self._followers[index] if self._followers is not None else ():
            _apply(draft, alignment)
        self._grown.set()

    async def _read(self, index: int, stream: StepStream) -> None:
        try:
            async with contextlib.aclosing(stream):
                async for draft in stream:
                    self._set(index, draft)
                    if isinstance(draft, Failure) or draft.whole or not self._wanted(index):
                        return
            raise BackendError(
                "a decomposition stream ended with neither a whole decomposition nor a Failure; "
                "a StepStream must end with one of them"
            )
        finally:
            self._grown.set()  # the rounds may be waiting for this stream to end

    async def _decompose(self, decomposer: Decomposer, requests: list[DecomposeRequest]) -> None:
        try:
            results = await decompose_distinct(decomposer, requests)
            for index, result in enumerate(results):
                self._set(index, result if isinstance(result, Failure) else Draft.of(result))
        finally:
            self._grown.set()


def _apply(draft: Draft | Failure, alignment: Alignment) -> None:
    if isinstance(draft, Failure):
        alignment.fail(draft.reason)
    else:
        alignment.update(draft)


def _check_count(what: str, got: int, wanted: int) -> None:
    if got != wanted:
        raise BackendError(
            f"the decomposer returned {got} {what} for {wanted} requests; "
            f"a Decomposer must return one per request, in order"
        )


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
    _check_count("results", len(results), len(unique))
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
