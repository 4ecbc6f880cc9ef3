"""`rlkd annotate`: an annotator LLM decomposes the teacher's reasoning paths into the GSRM's step
format, and each well-formed decomposition becomes one SFT record for `rlkd train-gsrm`.

A path goes to the annotator with its domain's decomposition prompt, the very prompt the GSRM is
served with (`rlkd.gsrm.prompts`), so the GSRM learns the question it will be asked. The reply is
read with the GSRM's own parser: no steps, or a step that lacks a part, earns one retry with a
short reminder in the same conversation; a reply still malformed, or cut at the token budget, is
rejected with its reason. The decomposition is stored in the canonical format (`format_steps`),
which the parser reads back unchanged. Accepted and rejected paths are results: they go to the
store in shards (`rlkd.build.records`) and a rerun skips them. A path the annotator did not
answer (a timeout, a rate limit that outlasted the backend's retries, a server error) is a
failure: counted, not stored, and tried again by the next run.

A path's id is a hash of its domain, problem and reasoning: it does not depend on the dataset's
order or on the selection, so a rerun with a larger limit annotates only the new paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlkd.build.config import gsrm_build
from rlkd.build.records import REJECTED_PREFIX, Record, done_ids, next_shard, shard_key, write_shard
from rlkd.data import examples, training_records
from rlkd.errors import RLKDError
from rlkd.gsrm.backends import chat_model
from rlkd.gsrm.backends.chat import ChatModel, Messages
from rlkd.gsrm.prompts import decompose_messages, sft_record
from rlkd.gsrm.steps import format_steps, parse_steps, thinking
from rlkd.gsrm.types import PARTS, DecomposeRequest, Failure, Kind, Step
from rlkd.models import model_loader
from rlkd.spec.progress import ANNOTATE_KEY, ANNOTATIONS_PREFIX, GSRM_BUILD_PREFIX, AnnotateSummary
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import ANNOTATOR_KEY_ENV
from rlkd.store.base import Store, SubStore
from rlkd.store.job import JobStores

SHARD_SIZE = 100
"""Records per shard: a killed run loses at most this many annotations of each kind."""

LABELS: dict[Kind, str] = {
    "meta": "meta-reasoning",
    "subproblem": "sub-problem",
    "answer": "answer",
}
FORMAT = format_steps([Step("...", "...", "...")])


class Stopped(RLKDError):
    """The run was stopped (SIGTERM) after writing what it had annotated."""


@dataclass(frozen=True)
class TeacherPath:
    """One teacher reasoning path to annotate, under its id."""

    id: str
    request: DecomposeRequest


@dataclass(frozen=True)
class Outcome:
    """What became of one path."""

    kind: Literal["accepted", "rejected", "failed"]
    record: Record = field(default_factory=dict)
    """The SFT record (accepted) or the rejection with its reason (rejected)."""
    reason: str = ""
    """Why it was rejected or failed."""
    detail: str = ""
    """What the backend said about a failure (for the log)."""
    reminded: bool = False
    """The first reply was malformed and the annotator was asked again."""


def path_id(request: DecomposeRequest) -> str:
    """A path's id: the same text in the same domain, for the same problem, is one path."""
    text = json.dumps([request.domain, request.problem, request.reasoning])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def teacher_paths(job: RLKDJob, stores: JobStores) -> list[TeacherPath]:
    """The distinct teacher paths of the job's training examples (spec.dataset and its
    selection), in the selection's order, at most gsrm.build.limit of them."""
    spec = job.spec
    requests = [
        DecomposeRequest(thinking(e.teacher), e.problem, e.domain)
        for e in examples(training_records(spec, stores), spec)
    ]
    distinct = {path_id(r): r for r in requests}
    paths = [TeacherPath(i, r) for i, r in distinct.items()]
    return paths[: gsrm_build(job.spec).limit]


def malformed(steps: Sequence[Step]) -> str | None:
    """Why a decomposition cannot train the GSRM (no_steps, missing_parts), None when it can."""
    if not steps:
        return "no_steps"
    if any(not getattr(step, part) for step in steps for part in PARTS):
        return "missing_parts"
    return None


def reminder(reason: str, steps: Sequence[Step]) -> str:
    """What the annotator is told when its reply was malformed."""
    if reason == "no_steps":
        problem = "Your reply has no steps in the format asked for."
    else:
        gaps = [
            f"step {n} has no {LABELS[part]}"
            for n, step in enumerate(steps, start=1)
            for part in PARTS
            if not getattr(step, part)
        ]
        problem = f"In your reply {', '.join(gaps[:5])}{', ...' if len(gaps) > 5 else ''}."
    return (
        f"{problem} Write the whole decomposition again: only the steps, every step with all "
        f"three parts, as:\n{FORMAT}"
    )


async def annotate_path(chat: ChatModel, path: TeacherPath, max_tokens: int) -> Outcome:
    """Ask the annotator to decompose one path; one retry with a reminder when the reply is
    malformed."""
    request = path.request
    if not request.reasoning.strip():
        return _rejected(path, "empty_path", "", reminded=False)
    conversation: Messages = decompose_messages(request)
    reminded = False
    while True:
        [reply] = await chat.chat([conversation], max_tokens)
        if isinstance(reply, Failure):
            return Outcome("failed", reason=reply.reason, detail=reply.detail, reminded=reminded)
        steps = [] if reply.truncated else parse_steps(reply.text)
        reason = "token_limit" if reply.truncated else malformed(steps)
        if reason is None:
            record = sft_record(request, format_steps(steps))
            extra = {"id": path.id, "domain": request.domain, "steps": len(steps)}
            return Outcome("accepted", {**record, **extra}, reminded=reminded)
        if reminded or reason == "token_limit":  # a cut reply would be cut again
            return _rejected(path, reason, reply.text, reminded=reminded)
        conversation = [
            *conversation,
            {"role": "assistant", "content": reply.text},
            {"role": "user", "content": reminder(reason, steps)},
        ]
        reminded = True


def _rejected(path: TeacherPath, reason: str, reply: str, *, reminded: bool) -> Outcome:
    record = {
        "id": path.id,
        "domain": path.request.domain,
        "problem": path.request.problem,
        "reason": reason,
        "reply": reply,
    }
    return Outcome("rejected", record, reason=reason, reminded=reminded)


class Shards:
    """Records waiting for their shard, one queue per prefix (accepted, rejected): a shard is
    written whole once `size` records wait, and by `flush`."""

    def __init__(self, store: Store, size: int) -> None:
        self.store = store
        self.size = size
        self.waiting: dict[str, list[Record]] = {ANNOTATIONS_PREFIX: [], REJECTED_PREFIX: []}
        self.numbers = {prefix: next_shard(store, prefix) for prefix in self.waiting}

    def add(self, prefix: str, record: Record) -> None:
        self.waiting[prefix].append(record)
        if len(self.waiting[prefix]) >= self.size:
            self._write(prefix)

    def flush(self) -> None:
        for prefix, records in self.waiting.items():
            if records:
                self._write(prefix)

    def _write(self, prefix: str) -> None:
        number = self.numbers[prefix]
        while self.store.exists(shard_key(prefix, number)):  # a run beside this one wrote it
            number += 1
        write_shard(self.store, prefix, number, self.waiting[prefix])
        self.numbers[prefix] = number + 1
        self.waiting[prefix] = []


@dataclass
class Tally:
    """The counts of one run."""

    outcomes: Counter[str] = field(default_factory=Counter)
    reminded: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    details: dict[str, str] = field(default_factory=dict)
    """The first failure's detail for each reason."""

    def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome.kind] += 1
        self.reminded += outcome.reminded
        if outcome.kind == "rejected":
            self.rejections[outcome.reason] += 1
        elif outcome.kind == "failed":
            self.failures[outcome.reason] += 1
            self.details.setdefault(outcome.reason, outcome.detail)


async def annotate_all(
    chat: ChatModel,
    paths: Sequence[TeacherPath],
    shards: Shards,
    *,
    max_tokens: int,
    concurrency: int,
    progress: Any = None,
) -> Tally:
    """Annotate `paths`, `concurrency` at a time, into `shards`; whatever was annotated is
    written when the work ends, is cancelled (Ctrl-C, SIGTERM) or breaks."""
    tally = Tally()
    pending = iter(paths)

    async def worker() -> None:
        for path in pending:
            outcome = await annotate_path(chat, path, max_tokens)
            tally.add(outcome)
            if outcome.kind != "failed":
                prefix = ANNOTATIONS_PREFIX if outcome.kind == "accepted" else REJECTED_PREFIX
                shards.add(prefix, outcome.record)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(
                    {k: tally.outcomes[k] for k in ("accepted", "rejected", "failed")},
                    refresh=False,
                )

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(paths))):
                group.create_task(worker())
    except ExceptionGroup as errors:  # a worker broke (a shard the store refused): say why
        raise errors.exceptions[0] from None
    finally:
        shards.flush()
        aclose = getattr(chat, "aclose", None)
        if aclose is not None:
            await aclose()
    return tally


def annotate(
    job: RLKDJob,
    stores: JobStores,
    *,
    cache_dir: Path,
    env: Mapping[str, str] = os.environ,
    concurrency: int | None = None,
    shard_size: int = SHARD_SIZE,
    say: Callable[[str], None] = print,
    bars: bool = False,
) -> AnnotateSummary:
    """The annotation of a GSRM build, as `rlkd annotate` runs it: every selected teacher path
    not accepted or rejected yet goes to the annotator, `concurrency` at a time (default: the
    annotator's request.maxConcurrency). The summary goes to `gsrm-build/annotate.json`.
    `cache_dir` holds a local copy of a transformers annotator kept in the store."""
    build = gsrm_build(job.spec)
    store = SubStore(stores.run, GSRM_BUILD_PREFIX)
    _save(store, AnnotateSummary())
    paths = teacher_paths(job, stores)
    done = done_ids(store)
    todo = [p for p in paths if p.id not in done]
    annotator = build.annotator
    concurrency = concurrency or annotator.request.max_concurrency
    settings = annotator.request.model_copy(update={"max_concurrency": concurrency})
    annotator = annotator.model_copy(update={"request": settings})
    name = annotator.model or annotator.served_model_name or "annotator"
    say(
        f"annotate: {len(paths)} teacher paths, {len(paths) - len(todo)} done before; "
        f"annotating {len(todo)} with {name} ({annotator.backend}, {concurrency} at a time) "
        f"into {store.uri}"
    )
    tally = Tally()
    if todo:
        chat = chat_model(annotator, "annotator", env, local=model_loader(stores, cache_dir))
        shards = Shards(store, shard_size)

        def work(progress: Any) -> Coroutine[Any, Any, Tally]:
            return annotate_all(
                chat,
                todo,
                shards,
                max_tokens=settings.max_tokens,
                concurrency=concurrency,
                progress=progress,
            )

        tally = _run(work, total=len(todo), bars=bars)
    summary = AnnotateSummary(
        finished=True,
        paths=len(paths),
        skipped=len(paths) - len(todo),
        accepted=tally.outcomes["accepted"],
        rejected=tally.outcomes["rejected"],
        reminded=tally.reminded,
        rejections=dict(sorted(tally.rejections.items())),
        failures=dict(sorted(tally.failures.items())),
    )
    _save(store, summary)
    key = env.get(ANNOTATOR_KEY_ENV) or None
    for reason, detail in sorted(tally.details.items()):
        say(f"annotate: failed {reason}, e.g. {_redact(detail, key)}")
    if tally.failures:
        say("annotate: failed paths are not stored; run the same command again to retry them")
    say(f"annotate: {summary.counts()}")
    return summary


def _run(work: Callable[[Any], Coroutine[Any, Any, Tally]], *, total: int, bars: bool) -> Tally:
    """Run `work` (annotate_all, given a progress bar); SIGTERM (a pod being stopped) cancels it
    like Ctrl-C, so what was annotated is written before the process goes."""
    from tqdm.auto import tqdm

    async def main() -> Tally:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        handled = False
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)  # main thread only
            handled = True
        bar = tqdm(total=total, desc="annotate", unit="path", disable=not bars)
        try:
            return await work(bar)
        finally:
            bar.close()
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        raise Stopped(
            "stopped (SIGTERM) after writing what was annotated; run the same command again to "
            "resume"
        ) from None


def _save(store: Store, summary: AnnotateSummary) -> None:
    store.put_json(ANNOTATE_KEY, summary.to_dict())


def _redact(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text
