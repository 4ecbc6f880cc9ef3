"""Choosing a backend from the spec: which transport, which URL and model name, and the errors a
user can hit. Nothing here sends a request."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlkd.errors import BackendError
from rlkd.gsrm.backends import build_decomposer, build_judge, chat_model
from rlkd.gsrm.backends.chat import ChatDecomposer, ChatJudge
from rlkd.gsrm.backends.openai import OpenAIChat
from rlkd.gsrm.backends.rule import RuleDecomposer, RuleJudge
from rlkd.spec.job import InferenceSpec, RequestSettings


@pytest.mark.parametrize(
    ("spec", "role", "env", "url", "model", "model_id"),
    [
        (
            InferenceSpec(model="s3://models/gsrm-7b"),
            "gsrm",
            {"RLKD_GSRM_URL": "http://job-gsrm:8000/v1"},
            "http://job-gsrm:8000/v1/chat/completions",
            "gsrm",
            "s3://models/gsrm-7b",
        ),
        (
            InferenceSpec(model="org/gsrm", served_model_name="g"),
            "teacher",
            {"RLKD_TEACHER_URL": "http://t:8000/v1/"},
            "http://t:8000/v1/chat/completions",
            "g",
            "org/gsrm",
        ),
        (
            InferenceSpec(model="org/gsrm", backend="openai", url="https://llm.example/v1"),
            "gsrm",
            {},
            "https://llm.example/v1/chat/completions",
            "org/gsrm",
            "org/gsrm",
        ),
    ],
)
def test_http_backends_get_their_url_and_model_name(spec, role, env, url, model, model_id) -> None:
    decomposer = build_decomposer(spec, role, env)
    assert isinstance(decomposer, ChatDecomposer)
    assert isinstance(decomposer.model, OpenAIChat)
    assert (decomposer.model.url, decomposer.model.model) == (url, model)
    assert decomposer.model_id == model_id
    assert decomposer.max_tokens == spec.request.max_tokens


def test_the_judge_uses_its_own_server_and_request_settings() -> None:
    settings = RequestSettings(max_concurrency=7, max_retries=1)
    spec = InferenceSpec(model="org/judge", request=settings)
    judge = build_judge(spec, env={"RLKD_JUDGE_URL": "http://j:8000/v1"})
    assert isinstance(judge, ChatJudge)
    assert isinstance(judge.model, OpenAIChat)
    assert (judge.model.url, judge.model.model) == ("http://j:8000/v1/chat/completions", "judge")
    assert judge.model.settings == settings


def test_vllm_without_its_url_variable_says_which_variable_to_set() -> None:
    with pytest.raises(BackendError, match="RLKD_JUDGE_URL is not set"):
        build_judge(InferenceSpec(model="org/judge"), env={"RLKD_GSRM_URL": "http://g/v1"})


def test_rule_backend_needs_no_model() -> None:
    spec = InferenceSpec(backend="rule")
    assert isinstance(build_decomposer(spec, env={}), RuleDecomposer)
    assert isinstance(build_judge(spec, env={}), RuleJudge)


@pytest.mark.parametrize("model", ["s3://models/gsrm", "store://models/gsrm", "toy://gsrm"])
def test_transformers_backend_without_the_jobs_store_asks_for_a_local_model(model: str) -> None:
    with pytest.raises(BackendError, match="local directory or a hub id"):
        build_decomposer(InferenceSpec(model=model, backend="transformers"), env={})


@pytest.mark.parametrize(
    ("spec", "role", "env", "authorization"),
    [
        (
            InferenceSpec(model="gpt-x", backend="openai", url="https://api.example/v1"),
            "annotator",
            {"RLKD_ANNOTATOR_API_KEY": "sk-1"},
            "Bearer sk-1",
        ),
        (
            InferenceSpec(model="org/annotator"),
            "annotator",
            {"RLKD_ANNOTATOR_URL": "http://a:8000/v1", "RLKD_ANNOTATOR_API_KEY": "sk-1"},
            "Bearer sk-1",
        ),
        (
            InferenceSpec(model="gpt-x", backend="openai", url="https://api.example/v1"),
            "annotator",
            {"RLKD_ANNOTATOR_API_KEY": ""},
            None,
        ),
        (  # the annotator's key is the annotator's alone
            InferenceSpec(model="org/gsrm", backend="openai", url="http://g:8000/v1"),
            "gsrm",
            {"RLKD_ANNOTATOR_API_KEY": "sk-1"},
            None,
        ),
    ],
)
def test_only_the_annotator_sends_its_api_key(spec, role, env, authorization) -> None:
    model = chat_model(spec, role, env)
    assert isinstance(model, OpenAIChat)
    assert model._headers == ({"Authorization": authorization} if authorization else {})
    assert "sk-1" not in repr(model)


def test_choosing_a_backend_loads_no_http_client_or_ml_stack_until_one_is_built() -> None:
    code = (
        "import sys\n"
        "from rlkd.gsrm.backends import build_judge\n"
        "from rlkd.spec.job import InferenceSpec\n"
        "build_judge(InferenceSpec(backend='rule'))\n"
        "print(sorted({'aiohttp', 'torch', 'transformers'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_spec_built_in_code_without_its_required_fields_is_an_error_not_an_assert() -> None:
    from rlkd.errors import BackendError
    from rlkd.gsrm.backends import build_judge
    from rlkd.spec.job import InferenceSpec

    unchecked = InferenceSpec.model_construct(backend="openai", model="m", url=None)
    with pytest.raises(BackendError, match=r"judge\.url: is required with backend openai"):
        build_judge(unchecked)
