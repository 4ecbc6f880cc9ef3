"""Benchmark: serving the structure reward for one GRPO batch, the reference's way and ours.

    python benchmarks/reward_pipeline.py [--prompts 8] [--generations 4] [--request-ms 50] ...

One local OpenAI-compatible server (tests/openai_stub.py) with a latency per request and per
generated token, decoding the sequences of a batch in parallel as vLLM does, and streaming
tokens at that rate to a client that asks (stopping when the client goes away, as vLLM aborts
the request), serves all patterns:

- reference, as the reference implementation does it: per GRPO step, one batched generate
  request for all student decompositions and one for all teacher decompositions (recomputed at
  every step), then the judge over a thread pool across completions (one run per pool size in
  `--reference-threads`), sequential within a completion, each question a chat request with a
  free-form reply, read leniently;
- ours, whole: the real StructureEngine and openai backend as they were before streaming
  (teacher decompositions cached; the student decompositions whole, in one call; judge rounds
  batched, at most 2 tokens a question);
- ours, streaming: the same engine with the students streamed: the judge asks about step k
  while the GSRM writes step k+1, and a student's generation is stopped once its reward is
  decided.

Replies are fake but of realistic length: decompositions of 6-12 steps (~50 tokens a step), and
judge replies that start with the verdict and go on for `--judge-reply-tokens`. All patterns
get the same verdicts: each step part carries an id, and the judge says yes when the two ids it
is shown are equal; a student follows its teacher up to a random step, then diverges. All
patterns implement the same method, so the benchmark fails unless they give the same rewards.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from rlkd.gsrm.backends import build_decomposer, build_judge
from rlkd.gsrm.backends.chat import ChatDecomposer, ChatJudge
from rlkd.gsrm.engine import ScoreItem, StructureEngine
from rlkd.gsrm.loop import run_sync
from rlkd.gsrm.prompts import decompose_messages
from rlkd.gsrm.steps import format_steps, parse_steps
from rlkd.gsrm.types import Decomposer, DecomposeRequest, Decomposition, Step
from rlkd.spec.job import InferenceSpec, RequestSettings
from tests.openai_stub import TOKEN, Latency, OpenAIStub, StubReply

MARK = re.compile(r"\[bench example (\d+)(?: completion (\d+))?\]")
PART_ID = re.compile(r"#(\w+(?:\.\w+)*)")  # m3.4 and m3.4s2 differ
# Filler without "yes" or "no" inside any word, so the reference's substring reading of a
# free-form reply gives the verdict its first word states.
FILLER = [
    "the",
    "first",
    "step",
    "fixes",
    "the",
    "missing",
    "quantity",
    "and",
    "the",
    "second",
    "step",
    "uses",
    "it",
    "to",
    "compute",
    "a",
    "relation",
    "between",
    "the",
    "given",
    "values",
    "so",
    "both",
    "parts",
    "of",
    "the",
    "reasoning",
    "address",
    "the",
    "same",
    "goal",
]
assert not any("yes" in w or "no" in w for w in FILLER)
DECOMPOSE_BUDGET = 4096
REFERENCE_JUDGE_BUDGET = 512


@dataclass(frozen=True)
class World:
    """The synthetic batch: who says what, deterministic in `seed`."""

    prompts: int
    generations: int
    judge_reply_tokens: int
    seed: int = 0

    def steps(self, example: int, completion: int | None) -> list[Step]:
        """The teacher's (completion None) or a student's decomposition; part ids say which
        parts a judge should find equal."""
        rng = random.Random(f"{self.seed}/{example}/{completion}")
        n = rng.randint(6, 12)
        diverge = n if completion is None else rng.randint(1, n)
        steps = []
        for i in range(n):
            own = completion is not None and i >= diverge
            meta, sub, ans = (
                f"m{example}.{i}" + (f"s{completion}" if own else ""),
                f"q{example}.{i}" + (f"s{completion}" if own or rng.random() < 0.2 else ""),
                f"a{example}.{i}" + (f"s{completion}" if own or rng.random() < 0.2 else ""),
            )
            steps.append(
                Step(
                    f"#{meta} " + " ".join(rng.choices(FILLER, k=24)),
                    f"#{sub} " + " ".join(rng.choices(FILLER, k=14)),
                    f"#{ans} " + " ".join(rng.choices(FILLER, k=6)),
                )
            )
        return steps

    def reasoning(self, example: int, completion: int | None) -> str:
        tag = f"[bench example {example}" + (
            "]" if completion is None else f" completion {completion}]"
        )
        return f"{tag} " + " ".join(random.Random(tag).choices(FILLER, k=300))

    def completions(self) -> list[tuple[int, int]]:
        return [(e, g) for e in range(self.prompts) for g in range(self.generations)]

    def needed_tokens(self, example: int, completion: int) -> int:
        """The tokens of a student's decomposition that its reward needs: up to the end of the
        first meta-reasoning that differs from the teacher's, or of the teacher's last step, or
        all of them. The least a GSRM stopped the moment the reward is decided can write."""
        teacher, student = self.steps(example, None), self.steps(example, completion)
        text = format_steps(student)
        for n, (t, s) in enumerate(zip(teacher, student, strict=False), start=1):
            if PART_ID.findall(t.meta) != PART_ID.findall(s.meta):
                text = text[: text.index(f"\n[Sub-problem {n}]")]
                break
        else:
            if len(student) > len(teacher):
                text = text[: text.index(f"\n[Meta-reasoning {len(teacher) + 1}]")]
        return len(TOKEN.findall(text))


class Server:
    """The stub's replies, and what it was asked for by kind."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.decompositions = 0
        self.questions = 0

    def respond(self, prompt: str) -> StubReply:
        mark = MARK.search(prompt)
        if mark:
            completion = None if mark[2] is None else int(mark[2])
            text = format_steps(self.world.steps(int(mark[1]), completion))
            self.decompositions += 1
            return StubReply(text)
        self.questions += 1
        ids = PART_ID.findall(prompt)
        same = len(ids) == 2 and ids[0] == ids[1]
        filler = FILLER * (self.world.judge_reply_tokens // len(FILLER) + 1)
        words = ["Yes," if same else "No,", *filler][: self.world.judge_reply_tokens]
        return StubReply(" ".join(words))


# --- the reference pattern -------------------------------------------------------------------


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as reply:
        return json.loads(reply.read())


def reference_step(url: str, world: World, threads: int) -> list[float | None]:
    """One GRPO step's structure rewards as the reference computes them."""
    pairs = world.completions()

    def generate(completion_of: list[int | None]) -> list[list[Step]]:
        prompts = [
            "\n".join(
                m["content"] for m in decompose_messages(DecomposeRequest(world.reasoning(e, g)))
            )
            for (e, _), g in zip(pairs, completion_of, strict=True)
        ]
        body = {
            "model": "gsrm",
            "prompt": prompts,
            "max_tokens": DECOMPOSE_BUDGET,
            "temperature": 0,
        }
        choices = post(f"{url}/completions", body)["choices"]
        return [parse_steps(c["text"]) for c in choices]

    students = generate([g for _, g in pairs])
    teachers = generate([None] * len(pairs))  # recomputed for every completion, every step

    def ask(question: str, teacher: str, student: str) -> str:
        content = f"{question}\nFirst: {teacher}\nSecond: {student}\nAnswer yes or no, and explain."
        body = {
            "model": "judge",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": REFERENCE_JUDGE_BUDGET,
            "temperature": 0,
        }
        return post(f"{url}/chat/completions", body)["choices"][0]["message"]["content"].lower()

    def reward(teacher: list[Step], student: list[Step]) -> float:
        r = []
        for t, s in zip(teacher, student, strict=False):
            if "yes" not in ask("Are these steps devoted to the same problem?", t.meta, s.meta):
                break
            r.append(1.0)
        for i, (t, s) in enumerate(zip(teacher, student[: len(r)], strict=False)):
            if "no" in ask("Are these two questions the same?", t.subproblem, s.subproblem):
                r[i] /= 2
        for i, (t, s) in enumerate(zip(teacher, student[: len(r)], strict=False)):
            if "no" in ask("Are these two answers equal?", t.answer, s.answer):
                r[i] /= 2
        return sum(r)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(reward, teachers, students))


# --- ours ------------------------------------------------------------------------------------


class Whole:
    """The GSRM without `stream`: the engine decomposes the students whole, as before streaming."""

    def __init__(self, decomposer: Decomposer) -> None:
        self.decomposer = decomposer
        self.model_id = decomposer.model_id

    async def decompose(self, requests: list[DecomposeRequest]) -> list[Decomposition]:
        return await self.decomposer.decompose(requests)


def our_engine(url: str, *, streaming: bool) -> StructureEngine:
    def spec(model: str) -> InferenceSpec:
        settings = RequestSettings(max_tokens=DECOMPOSE_BUDGET, max_concurrency=64)
        return InferenceSpec(backend="openai", url=url, model=model, request=settings)

    decomposer = build_decomposer(spec("gsrm"))
    judge = build_judge(spec("judge"))
    return StructureEngine(decomposer if streaming else Whole(decomposer), judge)


def close(engine: StructureEngine) -> None:
    """Close the engine's connections (on the engine loop, where they live)."""
    decomposer = engine.decomposer
    gsrm = decomposer.decomposer if isinstance(decomposer, Whole) else decomposer
    for backend in (gsrm, engine.judge):
        assert isinstance(backend, ChatDecomposer | ChatJudge)
        run_sync(backend.model.aclose())


def our_step(engine: StructureEngine, world: World) -> list[float | None]:
    items = [
        ScoreItem(world.reasoning(e, g), teacher=world.reasoning(e, None))
        for e, g in world.completions()
    ]
    result = engine.score_sync(items)
    assert result.errors == {}, result.errors
    return result.rewards


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    requests: float
    gsrm_generations: float
    gsrm_tokens: float
    aborted: float
    questions: float
    judge_tokens_per_question: float
    seconds: float
    rewards: list[float | None]
    """The last step's rewards."""


def measure(
    name: str,
    stub: OpenAIStub,
    server: Server,
    step: Callable[[], list[float | None]],
    steps: int,
) -> Row:
    """Run `step` `steps` times; per-step means of what the server saw."""
    stub.reset_counts()
    server.decompositions = server.questions = 0
    start = time.perf_counter()
    for _ in range(steps):
        rewards = step()
    seconds = time.perf_counter() - start
    time.sleep(0.2)  # the stub counts an abort when it next writes
    return Row(
        name,
        len(stub.requests) / steps,
        server.decompositions / steps,
        stub.tokens_by_model["gsrm"] / steps,
        stub.aborted / steps,
        server.questions / steps,
        stub.tokens_by_model["judge"] / max(server.questions, 1),
        seconds / steps,
        rewards,
    )


def measure_ours(
    name: str, stub: OpenAIStub, server: Server, world: World, steps: int, *, streaming: bool
) -> list[Row]:
    """Our engine's first step (teachers not cached yet) and its steady state."""
    engine = our_engine(stub.url, streaming=streaming)
    rows = [
        measure(f"{name}, first step", stub, server, lambda: our_step(engine, world), 1),
        measure(f"{name}, steady state", stub, server, lambda: our_step(engine, world), steps),
    ]
    close(engine)
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    """Run every pattern, print the table, and return its rows."""
    default_threads = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--request-ms", type=float, default=50.0, help="latency per request")
    parser.add_argument("--token-ms", type=float, default=10.0, help="latency per generated token")
    parser.add_argument("--judge-reply-tokens", type=int, default=40, help="free-form reply length")
    parser.add_argument("--steps", type=int, default=2, help="GRPO steps measured per pattern")
    parser.add_argument(
        "--reference-threads",
        type=int,
        nargs="+",
        default=[6, 20, 32],
        help="the reference's judge pool sizes, one run each; ThreadPoolExecutor's default "
        f"(min(32, cpus + 4), {default_threads} here) is added when missing",
    )
    args = parser.parse_args(argv)
    pools = sorted({*args.reference_threads, default_threads})

    world = World(args.prompts, args.generations, args.judge_reply_tokens)
    server = Server(world)
    latency = Latency(args.request_ms / 1000, args.token_ms / 1000)
    with OpenAIStub(server.respond, latency) as stub:
        reference = {
            threads: measure(
                f"reference, {threads} threads",
                stub,
                server,
                lambda threads=threads: reference_step(stub.url, world, threads),
                args.steps,
            )
            for threads in pools
        }
        whole = measure_ours("ours, whole", stub, server, world, args.steps, streaming=False)
        streaming = measure_ours("ours, streaming", stub, server, world, args.steps, streaming=True)
    rows = [*reference.values(), *whole, *streaming]
    for row in rows[1:]:
        assert row.rewards == rows[0].rewards, f"{row.name} disagrees with the reference"
    rewards = [r for r in rows[0].rewards if r is not None]

    print(
        f"GRPO batch {args.prompts} prompts x {args.generations} generations; server latency "
        f"{args.request_ms:g} ms/request + {args.token_ms:g} ms/token; reference judge pools "
        f"{', '.join(map(str, pools))} threads, free-form replies of {args.judge_reply_tokens} "
        "tokens"
    )
    header = (
        "pattern",
        "requests",
        "GSRM gens",
        "GSRM tokens",
        "aborted",
        "judge qs",
        "judge tok/q",
        "wall s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {r.name} | {r.requests:.0f} | {r.gsrm_generations:.0f} | {r.gsrm_tokens:.0f} | "
            f"{r.aborted:.0f} | {r.questions:.0f} | {r.judge_tokens_per_question:.2f} | "
            f"{r.seconds:.2f} |"
        )
    print(
        f"rewards (the same for every pattern): mean {sum(rewards) / len(rewards):.2f}, "
        f"min {min(rewards):g}, max {max(rewards):g}"
    )
    ours, before = streaming[-1], whole[-1]  # steady state
    needed = [world.needed_tokens(e, g) for e, g in world.completions()]
    print(
        f"GSRM tokens per step, streaming/whole: {ours.gsrm_tokens / before.gsrm_tokens:.0%} (a "
        f"stop the moment each reward is decided: {sum(needed) / before.gsrm_tokens:.0%}; the "
        f"longest decomposition a reward needs: {max(needed)} tokens, "
        f"{args.request_ms / 1000 + max(needed) * args.token_ms / 1000:.2f} s); wall time per "
        f"step, whole/streaming: {before.seconds / ours.seconds:.2f}"
    )
    for threads, row in reference.items():
        print(
            f"wall-time ratio reference/ours: {row.seconds / ours.seconds:.1f} ({threads} threads)"
        )
    print(
        f"wall-time ratio reference/ours: {reference[default_threads].seconds / ours.seconds:.1f}"
    )
    return rows


if __name__ == "__main__":
    main()
