"""Decomposer and Judge backends: openai (vLLM or any OpenAI-compatible server),
transformers (in-process) and rule (deterministic).

`build_decomposer` and `build_judge` choose one by `InferenceSpec.backend`, a closed set. Each
backend module is imported only when chosen, so the HTTP client and the ML stack load only in
the processes that use them.

A transformers model kept in the store (store://, s3://) or built on first use (toy://) is made
local by a `LocalModel` the caller passes in (rlkd.models.model_loader): the stores and the
cache directory belong to the job, which this layer does not know. The model id that keys the
teacher cache stays the spec's reference, wherever the copy lands.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from rlkd.errors import BackendError
from rlkd.gsrm.backends.chat import ChatDecomposer, ChatJudge, ChatModel
from rlkd.gsrm.types import Decomposer, Judge
from rlkd.spec.job import Backend, InferenceSpec
from rlkd.spec.refs import S3_SCHEME, STORE_SCHEME, TOY_SCHEME
from rlkd.spec.runtime import ANNOTATOR_KEY_ENV, InferenceRole, endpoint_env

LocalModel = Callable[[str, str], str]
"""(model reference, the spec field that holds it) -> what `from_pretrained` loads: a local
directory (store://, s3://, toy:// copied or built once) or a hub id."""

_FIELDS: dict[InferenceRole, str] = {
    "teacher": "spec.teacher.model.model",
    "annotator": "spec.gsrm.build.annotator.model",
}
"""Where a role's model is in the spec, for errors (default: spec.<role>.model)."""


def build_decomposer(
    spec: InferenceSpec,
    role: InferenceRole = "gsrm",
    env: Mapping[str, str] = os.environ,
    *,
    local: LocalModel | None = None,
) -> Decomposer:
    """The GSRM `spec` describes; `role` names the server deployed for it (backend vllm)."""
    if spec.backend == "rule":
        from rlkd.gsrm.backends.rule import RuleDecomposer

        return RuleDecomposer()
    model_id = spec.model or spec.served_model_name or role
    model = chat_model(spec, role, env, local=local)
    return ChatDecomposer(model, model_id, spec.request.max_tokens)


def build_judge(
    spec: InferenceSpec,
    role: InferenceRole = "judge",
    env: Mapping[str, str] = os.environ,
    *,
    local: LocalModel | None = None,
) -> Judge:
    """The judge `spec` describes; `role` names the server deployed for it (backend vllm)."""
    if spec.backend == "rule":
        from rlkd.gsrm.backends.rule import RuleJudge

        return RuleJudge()
    return ChatJudge(chat_model(spec, role, env, local=local))


def chat_model(
    spec: InferenceSpec,
    role: InferenceRole,
    env: Mapping[str, str],
    *,
    local: LocalModel | None = None,
) -> ChatModel:
    """The chat model behind a model-backed `spec`. `local` makes a transformers model that is
    not a local directory local; without it such a model is an error."""
    return _CHAT_MODELS[spec.backend](spec, role, env, local)


def _api_key(role: InferenceRole, env: Mapping[str, str]) -> str | None:
    """The annotator's API key (a hosted API); no other role sends one."""
    return (env.get(ANNOTATOR_KEY_ENV) or None) if role == "annotator" else None


def _vllm(
    spec: InferenceSpec, role: InferenceRole, env: Mapping[str, str], local: LocalModel | None
) -> ChatModel:
    variable = endpoint_env(role)
    url = env.get(variable)
    if not url:
        raise BackendError(
            f"{variable} is not set: backend vllm reads the {role} server's base URL from it "
            f"(the operator sets it in learner pods); set it, e.g. {variable}=http://host:8000/v1, "
            "or use backend openai with a url"
        )
    from rlkd.gsrm.backends.openai import OpenAIChat

    return OpenAIChat(
        url, spec.served_model_name or role, spec.request, api_key=_api_key(role, env)
    )


def _required(value: str | None, role: InferenceRole, field: str, backend: str) -> str:
    """A field the spec's rules require for `backend`: checked again here, since a spec can be
    built in code without them (and asserts vanish under python -O)."""
    if value is None:
        raise BackendError(f"{role}.{field}: is required with backend {backend}; set it")
    return value


def _openai(
    spec: InferenceSpec, role: InferenceRole, env: Mapping[str, str], local: LocalModel | None
) -> ChatModel:
    from rlkd.gsrm.backends.openai import OpenAIChat

    url = _required(spec.url, role, "url", "openai")
    model = _required(spec.model, role, "model", "openai")
    return OpenAIChat(
        url, spec.served_model_name or model, spec.request, api_key=_api_key(role, env)
    )


def _transformers(
    spec: InferenceSpec, role: InferenceRole, env: Mapping[str, str], local: LocalModel | None
) -> ChatModel:
    model = _required(spec.model, role, "model", "transformers")
    if local is not None:
        model = local(model, _FIELDS.get(role, f"spec.{role}.model"))
    elif model.startswith((S3_SCHEME, STORE_SCHEME, TOY_SCHEME)):
        raise BackendError(
            f"backend transformers loads a local directory or a hub id, not {model}: this "
            "command builds the model without the job's store; copy the model into the image or "
            "a mounted volume and give its /absolute/path"
        )
    from rlkd.gsrm.backends.transformers import TransformersChat

    return TransformersChat(model, batch_size=spec.request.max_concurrency)


_CHAT_MODELS: dict[
    Backend,
    Callable[[InferenceSpec, InferenceRole, Mapping[str, str], LocalModel | None], ChatModel],
] = {
    "vllm": _vllm,
    "openai": _openai,
    "transformers": _transformers,
}
