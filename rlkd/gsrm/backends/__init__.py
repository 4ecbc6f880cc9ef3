"""Decomposer and Judge backends: openai (vLLM or any OpenAI-compatible server),
transformers (in-process) and rule (deterministic).

`build_decomposer` and `build_judge` choose one by `InferenceSpec.backend`, a closed set. Each
backend module is imported only when chosen, so the HTTP client and the ML stack load only in
the processes that use them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from rlkd.errors import BackendError
from rlkd.gsrm.backends.chat import ChatDecomposer, ChatJudge, ChatModel
from rlkd.gsrm.types import Decomposer, Judge
from rlkd.spec.job import Backend, InferenceSpec
from rlkd.spec.runtime import InferenceRole, endpoint_env


def build_decomposer(
    spec: InferenceSpec, role: InferenceRole = "gsrm", env: Mapping[str, str] = os.environ
) -> Decomposer:
    """The GSRM `spec` describes; `role` names the server deployed for it (backend vllm)."""
    if spec.backend == "rule":
        from rlkd.gsrm.backends.rule import RuleDecomposer

        return RuleDecomposer()
    model_id = spec.model or spec.served_model_name or role
    return ChatDecomposer(chat_model(spec, role, env), model_id, spec.request.max_tokens)


def build_judge(
    spec: InferenceSpec, role: InferenceRole = "judge", env: Mapping[str, str] = os.environ
) -> Judge:
    """The judge `spec` describes; `role` names the server deployed for it (backend vllm)."""
    if spec.backend == "rule":
        from rlkd.gsrm.backends.rule import RuleJudge

        return RuleJudge()
    return ChatJudge(chat_model(spec, role, env))


def chat_model(spec: InferenceSpec, role: InferenceRole, env: Mapping[str, str]) -> ChatModel:
    """The chat model behind a model-backed `spec`."""
    return _CHAT_MODELS[spec.backend](spec, role, env)


def _vllm(spec: InferenceSpec, role: InferenceRole, env: Mapping[str, str]) -> ChatModel:
    variable = endpoint_env(role)
    url = env.get(variable)
    if not url:
        raise BackendError(
            f"{variable} is not set: backend vllm reads the {role} server's base URL from it "
            f"(the operator sets it in learner pods); set it, e.g. {variable}=http://host:8000/v1, "
            "or use backend openai with a url"
        )
    from rlkd.gsrm.backends.openai import OpenAIChat

    return OpenAIChat(url, spec.served_model_name or role, spec.request)


def _required(value: str | None, role: InferenceRole, field: str, backend: str) -> str:
    """A field the spec's rules require for `backend`: checked again here, since a spec can be
    built in code without them (and asserts vanish under python -O)."""
    if value is None:
        raise BackendError(f"{role}.{field}: is required with backend {backend}; set it")
    return value


def _openai(spec: InferenceSpec, role: InferenceRole, env: Mapping[str, str]) -> ChatModel:
    from rlkd.gsrm.backends.openai import OpenAIChat

    url = _required(spec.url, role, "url", "openai")
    model = _required(spec.model, role, "model", "openai")
    return OpenAIChat(url, spec.served_model_name or model, spec.request)


def _transformers(spec: InferenceSpec, role: InferenceRole, env: Mapping[str, str]) -> ChatModel:
    model = _required(spec.model, role, "model", "transformers")
    if model.startswith(("s3://", "store://")):
        raise BackendError(
            f"backend transformers loads a local directory or a hub id, not {model}: copy the "
            "model into the image or a mounted volume and give its /absolute/path"
        )
    from rlkd.gsrm.backends.transformers import TransformersChat

    return TransformersChat(model, batch_size=spec.request.max_concurrency)


_CHAT_MODELS: dict[
    Backend, Callable[[InferenceSpec, InferenceRole, Mapping[str, str]], ChatModel]
] = {
    "vllm": _vllm,
    "openai": _openai,
    "transformers": _transformers,
}
