"""The mini GSRM and judge (tests/minimodels.py) served by the real vLLM on the CPU, asked through
the OpenAI chat API as the reward engine asks them: vLLM loads what the project's SFT saved, and
the decompositions parse and the verdicts are read, as through transformers
(tests/integration/test_minimodels.py). Slow: two server start-ups, side by side (~45 s)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from rlkd.gsrm.backends import build_decomposer, build_judge
from rlkd.spec.job import InferenceSpec, RequestSettings
from tests.minimodels import gsrm_quality, judge_accuracy, mini_gsrm, mini_judge
from tests.s3server import free_ports
from tests.vllmserver import VLLMServer, require_vllm

pytestmark = pytest.mark.vllm

PATHS = 40
QUESTIONS = 400


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[VLLMServer, VLLMServer]]:
    python = require_vllm()
    ports = free_ports(2)
    models = {"gsrm": mini_gsrm(), "judge": mini_judge()}
    with ExitStack() as stack:
        started = []
        for (name, model), port in zip(models.items(), ports, strict=True):
            server = VLLMServer(python, model, port, tmp_path / f"{name}.log", name=name)
            server.start()
            stack.callback(server.stop)
            started.append(server)
        for server in started:
            server.wait_ready()
        yield started[0], started[1]


def spec(server: VLLMServer, max_tokens: int) -> InferenceSpec:
    request = RequestSettings(max_tokens=max_tokens, max_concurrency=16, max_retries=0)
    return InferenceSpec(model=server.name, served_model_name=server.name, request=request)


async def test_vllm_serves_the_mini_gsrm_and_judge(
    servers: tuple[VLLMServer, VLLMServer],
) -> None:
    gsrm, judge = servers
    env = {"RLKD_GSRM_URL": gsrm.url, "RLKD_JUDGE_URL": judge.url}

    measured = await gsrm_quality(build_decomposer(spec(gsrm, 256), env=env), PATHS)
    parsed, right = await judge_accuracy(build_judge(spec(judge, 2), env=env), QUESTIONS)

    print(measured, f"judge: {parsed:.3f} parsed, {right:.3f} right")
    assert measured.parse_rate >= 0.8
    assert parsed == 1.0
    assert right >= 0.55
