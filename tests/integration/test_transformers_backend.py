"""The transformers backend on a tiny random Qwen2 built offline: batched greedy generation
through the chat template, token budgets, results of the Decomposer and Judge shapes, and
streamed replies that stop when their readers close them. The model's text is random, so the
assertions are about shapes, limits, batching and how far generation went."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, Qwen2Tokenizer

from rlkd.gsrm.backends import build_decomposer, build_judge
from rlkd.gsrm.backends.chat import ChatDecomposer, ChatJudge, Reply, collect
from rlkd.gsrm.backends.transformers import TransformersChat
from rlkd.gsrm.types import DecomposeRequest, Failure, Question, Step
from rlkd.spec.job import InferenceSpec, RequestSettings
from rlkd.toy.model import train_tokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "Is 12 + 30 equal to 42?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Let x = 5."}],
    [{"role": "user", "content": "What is the area of a circle of radius r? Then 3x + 4 = 19."}],
]


@pytest.fixture(scope="module")
def chat(tiny_model: Path) -> TransformersChat:
    return TransformersChat(str(tiny_model), batch_size=2, device="cpu")


@pytest.fixture
def endless(chat: TransformersChat) -> Iterator[TransformersChat]:
    """The model without an end token: every reply runs to its budget unless stopped."""
    config = chat.model.generation_config
    eos, config.eos_token_id = config.eos_token_id, None
    yield chat
    config.eos_token_id = eos


async def test_a_batch_decodes_as_each_conversation_alone(chat: TransformersChat) -> None:
    batched = await chat.chat(CONVERSATIONS, max_tokens=12)
    alone = [(await chat.chat([c], max_tokens=12))[0] for c in CONVERSATIONS]
    assert batched == alone


@pytest.mark.parametrize(
    ("every_token_ends", "truncated"),
    [
        (False, True),  # no end token: every reply runs to the budget
        (True, False),  # every token is an end token: every reply ends at once
    ],
)
async def test_a_reply_is_truncated_exactly_when_it_reaches_the_budget_without_ending(
    chat: TransformersChat, every_token_ends: bool, truncated: bool
) -> None:
    config = chat.model.generation_config
    stops = list(range(chat.model.config.vocab_size)) if every_token_ends else None
    eos, config.eos_token_id = config.eos_token_id, stops
    try:
        replies = await chat.chat(CONVERSATIONS, max_tokens=4)
    finally:
        config.eos_token_id = eos
    assert [r.truncated for r in replies] == [truncated] * len(CONVERSATIONS)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (torch.OutOfMemoryError("CUDA out of memory"), "out_of_memory"),
        (ValueError("the chat template rejects this conversation"), "generation_error"),
    ],
)
async def test_a_batch_that_raises_fails_its_own_conversations(
    chat: TransformersChat,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    reason: str,
) -> None:
    generate = chat.model.generate
    errors = iter([error])

    def first_batch_raises(**kwargs: object) -> torch.Tensor:
        raised = next(errors, None)
        if raised is not None:
            raise raised
        return generate(**kwargs)

    monkeypatch.setattr(chat.model, "generate", first_batch_raises)
    with caplog.at_level(logging.WARNING, logger="rlkd.gsrm.backends.transformers"):
        replies = await chat.chat(CONVERSATIONS, max_tokens=4)
    # batch_size 2: the first two conversations fail, the third is generated.
    assert replies[:2] == [Failure(reason, f"{type(error).__name__}: {error}")] * 2
    assert isinstance(replies[2], Reply)
    assert [r.exc_info[1] for r in caplog.records] == [error]


def test_an_end_token_missing_from_the_generation_config_comes_from_the_tokenizer(
    tiny_model: Path, tmp_path: Path
) -> None:
    model = shutil.copytree(tiny_model, tmp_path / "no-eos")
    config = model / "generation_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "eos_token_id": None}))
    chat = TransformersChat(str(model), batch_size=2, device="cpu")
    assert chat.model.generation_config.eos_token_id == chat.tokenizer.eos_token_id is not None


def test_the_factory_builds_decomposer_and_judge_in_process(tiny_model: Path) -> None:
    spec = InferenceSpec(
        model=str(tiny_model), backend="transformers", request=RequestSettings(max_tokens=8)
    )
    decomposer = build_decomposer(spec, env={})
    judge = build_judge(spec, env={})
    assert isinstance(decomposer, ChatDecomposer)
    assert isinstance(judge, ChatJudge)
    assert isinstance(decomposer.model, TransformersChat)
    assert decomposer.model.batch_size == spec.request.max_concurrency


async def test_decompositions_and_verdicts_have_the_protocol_shapes(tiny_model: Path) -> None:
    spec = InferenceSpec(
        model=str(tiny_model), backend="transformers", request=RequestSettings(max_tokens=8)
    )
    requests = [DecomposeRequest("Let x = 5, so 2x = 10."), DecomposeRequest("42.", "2 + 40?")]
    decompositions = await build_decomposer(spec, env={}).decompose(requests)
    verdicts = await build_judge(spec, env={}).judge([Question("meta", "a", "b")] * 3)

    assert len(decompositions) == 2
    for d in decompositions:
        assert d == Failure("token_limit", "decomposition cut at 8 tokens") or (
            isinstance(d, list) and all(isinstance(s, Step) for s in d)
        )
    assert len(verdicts) == 3
    assert all(isinstance(v, bool) or v.reason == "unparseable_reply" for v in verdicts)


def test_the_tiny_model_reloads_as_qwen2_and_tokenises_as_trained(tiny_model: Path) -> None:
    reloaded = AutoTokenizer.from_pretrained(tiny_model)
    text = "[Meta-reasoning 1]: Let x = 5.\n\n  So 3x + 4 = 19, yes!\t\\boxed{25}"
    assert isinstance(reloaded, Qwen2Tokenizer)
    assert reloaded(text)["input_ids"] == train_tokenizer().encode(text).ids
    assert reloaded.decode(reloaded(text)["input_ids"]) == text


async def test_a_streamed_reply_is_the_decoding_of_what_generate_wrote(
    chat: TransformersChat,
) -> None:
    [streamed] = await chat.chat(CONVERSATIONS[:1], max_tokens=24)
    prompt = chat.tokenizer.apply_chat_template(
        CONVERSATIONS[0], tokenize=False, add_generation_prompt=True
    )
    inputs = chat.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = chat.model.generate(**inputs, max_new_tokens=24, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    assert isinstance(streamed, Reply)
    assert streamed.text == chat.tokenizer.decode(new, skip_special_tokens=True)


async def test_closing_the_streams_stops_the_generation(endless: TransformersChat) -> None:
    """The generating thread is held at its third token while the streams are closed, so the
    test knows where generation stood: it stops there instead of running to 64 tokens."""
    release = threading.Event()
    forwards = 0

    def hold(*_: object) -> None:
        nonlocal forwards
        forwards += 1
        if forwards == 3:
            release.wait(timeout=60)

    handle = endless.model.register_forward_pre_hook(hold)
    try:
        streams = endless.stream(CONVERSATIONS[:2], max_tokens=64)
        while forwards < 3:
            await asyncio.sleep(0.01)
        for stream in streams:
            await stream.aclose()
        release.set()
        while endless._lock.locked():
            await asyncio.sleep(0.01)
    finally:
        release.set()
        handle.remove()
    assert forwards == 3


async def test_a_stream_closed_before_its_batch_begins_is_not_generated(
    endless: TransformersChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    generate = endless.model.generate

    def counting(**kwargs: torch.Tensor) -> torch.Tensor:
        batches.append(len(kwargs["input_ids"]))
        return generate(**kwargs)

    monkeypatch.setattr(endless.model, "generate", counting)
    first, second, third = endless.stream(CONVERSATIONS, max_tokens=6)  # batches of 2, then 1
    await third.aclose()
    replies = [await collect(first), await collect(second)]
    assert [r.truncated for r in replies if isinstance(r, Reply)] == [True, True]
    assert batches == [2]
