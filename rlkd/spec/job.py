"""The RLKDJob spec: every setting of a distillation run, with the paper's recipe as defaults.

This module is the single source of truth. The CRD (`rlkd crd`), its defaults and bounds,
`rlkd validate`, and the field reference all derive from these classes.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import Field
from pydantic.alias_generators import to_camel, to_snake

from rlkd.errors import DatasetError
from rlkd.spec.base import Rule, SpecModel
from rlkd.spec.refs import (
    BUCKET_IP_PATTERN,
    ENV_NAME_PATTERN,
    LONG_KEY_PREFIX_PATTERN,
    MAX_MAP_KEYS,
    QUALIFIED_NAME_HINT,
    QUALIFIED_NAME_PATTERN,
    URL,
    Endpoint,
    LabelName,
    LabelValue,
    ObjectName,
    Quantity,
    Ref,
    S3Bucket,
    StorePrefix,
    qualified_name,
)
from rlkd.spec.runtime import BUILDER_ENV, BUILDER_ENV_PREFIX

Domain = Literal["math", "code", "science", "puzzle"]
Precision = Literal["bf16", "fp16", "fp32"]
DOMAINS: frozenset[str] = frozenset(get_args(Domain))


def domain_of(value: object, column: str) -> Domain:
    """A per-row domain value (dataset.columns.domain), or a DatasetError saying which values
    the column may hold."""
    if value not in DOMAINS:
        raise DatasetError(
            f"column {column!r} (spec.dataset.columns.domain) holds the domain {value!r}; use "
            f"one of {', '.join(sorted(DOMAINS))}"
        )
    return value  # type: ignore[return-value]  # checked against Domain's values above


# Upper bounds keep every integer inside what the API server (int64), CEL arithmetic and the
# libraries (numpy seeds are 32-bit) accept.
MAX_INT32 = 2**31 - 1
MAX_SEED = 2**32 - 1
MAX_TOKENS = 2**20

SYSTEM_PROMPT = (
    "You are a careful problem solver. First reason step by step inside <think> and </think>, "
    "then give the final result inside <answer> and </answer>, like this:\n"
    "<think>\nyour reasoning\n</think>\n<answer>\nyour answer\n</answer>\n"
    "Put the final answer in \\boxed{} inside the answer."
)


# --- scheduling on GPU nodes -------------------------------------------------------------------


class Toleration(SpecModel):
    """A Kubernetes toleration, so pods can land on tainted GPU nodes."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key to tolerate (empty with operator Exists tolerates every taint)."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value; Equal matches `value`."""
    value: str | None = Field(default=None, max_length=63)
    """Taint value to match when operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches every effect."""
    toleration_seconds: Annotated[int, Field(ge=0, le=MAX_INT32)] | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""

    # The Pod rules, checked here so the operator never builds a Pod the API server refuses.
    rules = (
        Rule(
            "key",
            "is required unless operator is Exists",
            "has(self.key) || self.operator == 'Exists'",
            lambda s: s.key is not None or s.operator == "Exists",
        ),
        Rule(
            "value",
            "must be empty when operator is Exists",
            "self.operator != 'Exists' || !has(self.value)",
            lambda s: s.operator != "Exists" or s.value is None,
        ),
        Rule(
            "tolerationSeconds",
            "needs effect NoExecute",
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            lambda s: s.toleration_seconds is None or s.effect == "NoExecute",
        ),
    )


class Resources(SpecModel):
    """CPU and memory for each pod (GPUs are set by their own fields). Requests equal limits."""

    cpu: Quantity | None = None
    """CPU cores, e.g. "8" or "500m"."""
    memory: Quantity | None = None
    """Memory, e.g. "64Gi"."""


def qualified_keys(field: str) -> Rule:
    """The rule that every key of the map `field` (camelCase) is a label key: a pod with another
    key, or a nodeSelector with one, is refused by the API server only once the operator builds
    it. A rule rather than a schema: a structural schema cannot constrain map keys."""
    attribute = to_snake(field)
    return Rule(
        field,
        QUALIFIED_NAME_HINT,
        f"!has(self.{field}) || self.{field}.all(k, k.matches('{QUALIFIED_NAME_PATTERN}')"
        f" && !k.matches('{LONG_KEY_PREFIX_PATTERN}'))",
        lambda s: all(qualified_name(key) for key in getattr(s, attribute)),
    )


class Placement(SpecModel):
    """Where pods of one kind run and what they get besides GPUs."""

    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=MAX_MAP_KEYS)
    """Node labels the pods require, e.g. {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}."""
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    """Taints the pods tolerate (GPU nodes are often tainted)."""
    resources: Resources = Field(default_factory=Resources)
    """CPU and memory per pod."""

    rules = (qualified_keys("nodeSelector"),)


# --- inference servers -------------------------------------------------------------------------


class VLLMServer(Placement):
    """A vLLM OpenAI-compatible server that the operator deploys for one inference role."""

    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Container image; empty uses the operator's pinned upstream vLLM image (chart values)."""
    replicas: Annotated[int, Field(ge=1, le=64)] = 1
    """Server replicas behind the role's Service."""
    tensor_parallel_size: Annotated[int, Field(ge=1, le=64)] = 1
    """GPUs per replica the model is sharded over (vLLM --tensor-parallel-size)."""
    max_model_len: Annotated[int, Field(ge=256, le=MAX_TOKENS)] | None = None
    """Context length the server accepts (vLLM --max-model-len); empty uses the model's own."""
    startup_timeout_seconds: Annotated[int, Field(ge=60, le=86400)] = 3600
    """How long a server may take to start before it is restarted: downloading the model (a hub
    id without a warm cache: tens of GB), loading it and capturing CUDA graphs (the startup
    probe's failureThreshold x periodSeconds)."""
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Fraction of each GPU's memory vLLM may use (vLLM --gpu-memory-utilization)."""
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """Weight and activation dtype (vLLM --dtype)."""
    extra_args: list[Annotated[str, Field(max_length=256)]] = Field(
        default_factory=list, max_length=64
    )
    """Further vLLM command-line arguments, passed as they are."""


class RequestSettings(SpecModel):
    """How the reward engine talks to an inference server."""

    max_tokens: Annotated[int, Field(ge=1, le=MAX_TOKENS)] = 4096
    """Token budget of one generation by the GSRM or a teacher (the judge always asks for 2)."""
    timeout_seconds: Annotated[float, Field(gt=0, le=86400)] = 300.0
    """Time limit of one request."""
    max_concurrency: Annotated[int, Field(ge=1, le=1024)] = 64
    """Requests in flight at once to this server."""
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    """Retries (with backoff) of a failed request before it counts as an error."""


Backend = Literal["vllm", "openai", "transformers", "rule"]
Tracker = Literal["tensorboard", "wandb", "mlflow"]


class InferenceSpec(SpecModel):
    """A model the reward engine or the teacher sampler calls, and how it is served.

    backend vllm: the operator deploys a vLLM server for it; openai: an existing
    OpenAI-compatible server at `url`; transformers: loaded inside the learner process;
    rule: no model, a deterministic stand-in for text already in step format.
    """

    model: Ref | None = None
    """The model: s3://bucket/path, store://path, /absolute/path, or a hub id org/name."""
    backend: Backend = "vllm"
    """How the model is served: vllm, openai, transformers or rule."""
    url: URL | None = None
    """Base URL of an existing OpenAI-compatible server, e.g. http://judge.llm:8000/v1 (openai)."""
    served_model_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """Model name sent in requests; empty uses the role's name (vllm) or `model` (openai)."""
    vllm: VLLMServer = Field(default_factory=VLLMServer)
    """The vLLM server the operator deploys (backend vllm)."""
    request: RequestSettings = Field(default_factory=RequestSettings)
    """Client settings: token budget, timeout, concurrency, retries."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "model",
            "is required unless backend is rule",
            "self.backend == 'rule' || has(self.model)",
            lambda s: s.backend == "rule" or s.model is not None,
        ),
        Rule(
            "url",
            "is required when backend is openai, and only then",
            "(self.backend == 'openai') == has(self.url)",
            lambda s: (s.backend == "openai") == (s.url is not None),
        ),
        Rule(
            "model",
            "is immutable once the job exists",
            "has(self.model) == has(oldSelf.model)"
            " && (!has(self.model) || self.model == oldSelf.model)",
        ),
    )


class GSRMTrainingSpec(SpecModel):
    """Supervised fine-tuning of the GSRM on the annotator's decompositions; the defaults are the
    paper's recipe (lr 5e-5, linear schedule, warmup 0.1, 1 epoch, bf16, max length 25k)."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] = 5e-5
    """Peak learning rate."""
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    """Learning-rate schedule."""
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Share of the steps spent warming the learning rate up."""
    num_train_epochs: Annotated[float, Field(gt=0, le=1e4)] = 1.0
    """Passes over the training records (maxSteps wins when set)."""
    max_steps: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = None
    """Stop after this many optimizer steps."""
    per_device_train_batch_size: Annotated[int, Field(ge=1, le=4096)] = 1
    """Records per device per forward pass."""
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=4096)] = 8
    """Forward passes per optimizer step."""
    max_length: Annotated[int, Field(ge=16, le=MAX_TOKENS)] = 25000
    """Longest record in tokens (prompt and decomposition); longer ones are truncated."""
    save_steps: Annotated[int, Field(ge=1, le=MAX_INT32)] = 100
    """Checkpoint to the store every this many steps (a restarted build resumes from it)."""
    save_total_limit: Annotated[int, Field(ge=1, le=1000)] | None = 2
    """Checkpoints kept in the store; empty keeps all."""
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 42
    """Seed of the shuffle and the initialisation."""
    precision: Precision = "bf16"
    """Training precision (fp32 on CPU)."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass to save memory."""


class GSRMGateSpec(SpecModel):
    """The quality gate `rlkd eval-gsrm` applies to the built GSRM on held-out annotations: a
    build below it fails, so a GSRM that cannot decompose never scores a training run."""

    min_parse_rate: Annotated[float, Field(ge=0, le=1)] = 0.9
    """Share of held-out paths the GSRM must decompose into well-formed steps."""
    min_step_count_agreement: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Share of held-out paths whose step count must equal the annotator's."""
    min_step_agreement: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Mean share of the annotator's steps the judge must find the GSRM's steps agree with."""


class GSRMBuildSpec(SpecModel):
    """Build the GSRM before the RLKD run, as the paper does: an annotator LLM decomposes the
    teacher's reasoning paths (spec.dataset, its selection) with the domain's prompt, and
    `baseModel` is fine-tuned on those decompositions. The build lives under the run's
    `gsrm-build/` prefix; the result goes to `gsrm.model`."""

    base_model: Ref
    """The instruct model fine-tuned into the GSRM (the paper: Qwen2.5-7B-Instruct)."""
    annotator: InferenceSpec
    """The annotator LLM: backend vllm (the operator serves it while annotating), openai (any
    OpenAI-compatible API at `url`) or transformers (in-process)."""
    annotator_key_secret: ObjectName | None = None
    """A Secret whose key RLKD_ANNOTATOR_API_KEY holds the annotator's API key (a hosted API);
    pods get it as environment, never in args, logs or status."""
    limit: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = None
    """Annotate at most this many teacher paths (empty: the whole selection of spec.dataset)."""
    held_out: Annotated[int, Field(ge=1, le=100000)] = 64
    """Accepted annotations kept out of training for the quality gate."""
    training: GSRMTrainingSpec = Field(default_factory=GSRMTrainingSpec)
    """The GSRM's supervised fine-tuning."""
    gate: GSRMGateSpec = Field(default_factory=GSRMGateSpec)
    """What the built GSRM must reach on the held-out annotations."""

    rules = (
        Rule(
            "annotator.backend",
            "must be vllm, openai or transformers: the annotator is a model",
            "self.annotator.backend != 'rule'",
            lambda s: s.annotator.backend != "rule",
        ),
    )


class GSRMSpec(InferenceSpec):
    """The GSRM: an existing model served as `backend` says, or one built first (`build`)."""

    build: GSRMBuildSpec | None = None
    """Build the GSRM from the teacher's paths before training; `model` then names where the
    built model goes (store://path or s3://bucket/path)."""

    rules = (
        *InferenceSpec.rules,
        Rule(
            "model",
            "must be a store:// or s3:// reference when build is set: it names where the built "
            "GSRM goes",
            "!has(self.build) || (has(self.model) && (self.model.startsWith('store://') ||"
            " self.model.startsWith('s3://')))",
            lambda s: s.build is None or (s.model or "").startswith(("store://", "s3://")),
        ),
        Rule(
            "backend",
            "must be vllm or transformers when build is set: the built GSRM is served from the "
            "store",
            "!has(self.build) || self.backend == 'vllm' || self.backend == 'transformers'",
            lambda s: s.build is None or s.backend in ("vllm", "transformers"),
        ),
        Rule(
            "build",
            "is immutable once the job exists: the built GSRM scores the run (create a new "
            "RLKDJob to build another)",
            "has(self.build) == has(oldSelf.build) && (!has(self.build) || self.build =="
            " oldSelf.build)",
        ),
    )


# --- the parts of a run ------------------------------------------------------------------------


class StudentSpec(SpecModel):
    """The model being distilled into."""

    model: Ref
    """The student's starting weights: s3://bucket/path, store://path, /path, or org/name."""

    rules = (Rule("", "is immutable once the job exists", "self == oldSelf"),)


class TeacherSpec(SpecModel):
    """Where the teacher's reasoning comes from."""

    source: Literal["dataset", "decompositions", "model"] = "dataset"
    """dataset: teacher reasoning paths in a dataset column (dataset.columns.teacherReasoning);
    decompositions: the teacher's GSRM decompositions, precomputed in a column
    (dataset.columns.teacherDecomposition); model: a teacher model samples the paths first."""
    model: InferenceSpec | None = None
    """The teacher model that samples reasoning paths (source model only)."""
    temperature: Annotated[float, Field(ge=0, le=10)] = 0.6
    """Sampling temperature of the teacher's reasoning paths (source model only): one path per
    example, sampled once by `rlkd prepare` and cached in the store; paths whose answer
    math-verify does not mark correct are left out with their examples."""

    rules = (
        Rule(
            "model",
            "is required when source is model, and only then",
            "(self.source == 'model') == has(self.model)",
            lambda s: (s.source == "model") == (s.model is not None),
        ),
        Rule("source", "is immutable once the job exists", "self.source == oldSelf.source"),
    )


class DatasetColumns(SpecModel):
    """Column names in the dataset."""

    problem: str = Field(default="problem", min_length=1, max_length=256)
    """The problem statement."""
    answer: str = Field(default="answer", min_length=1, max_length=256)
    """The gold answer (math-verify parses it for the accuracy reward)."""
    teacher_reasoning: str = Field(default="teacher_reasoning", min_length=1, max_length=256)
    """The teacher's thinking before </think> (teacher.source dataset)."""
    teacher_decomposition: str = Field(
        default="teacher_decomposition", min_length=1, max_length=256
    )
    """The GSRM decomposition of the teacher's thinking (teacher.source decompositions)."""
    domain: str | None = Field(default=None, min_length=1, max_length=256)
    """Per-row domain (math, code, science or puzzle); empty uses dataset.domain for every row."""


class DatasetSpec(SpecModel):
    """The training problems and which part of them RL uses."""

    uri: Ref
    """The dataset: a JSONL or Parquet file or prefix (s3://, store://, /path) or a hub id."""
    split: str = Field(default="train", min_length=1, max_length=64)
    """Split to read from a hub dataset."""
    columns: DatasetColumns = Field(default_factory=DatasetColumns)
    """Column names."""
    domain: Domain = "math"
    """Domain of every row (it selects the GSRM's prompt) unless columns.domain is set."""
    limit: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = None
    """Use at most this many examples (after shuffling with `seed`)."""
    fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    """Use this fraction of the examples, e.g. 0.001 for the paper's 0.1% regime."""
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 42
    """Shuffle seed for limit and fraction."""

    rules = (
        Rule(
            "fraction",
            "set limit or fraction, not both",
            "!(has(self.limit) && has(self.fraction))",
            lambda s: s.limit is None or s.fraction is None,
        ),
        Rule("", "is immutable once the job exists", "self == oldSelf"),
    )


class RewardsSpec(SpecModel):
    """Weights of the reward functions (the paper: accuracy 15, format 10, tag count 10,
    structure 15). A weight of 0 turns that reward off."""

    accuracy: Annotated[float, Field(ge=0, le=1e6)] = 15.0
    """Final boxed answer equals the gold answer (math-verify)."""
    format: Annotated[float, Field(ge=0, le=1e6)] = 10.0
    """Completion has the <think>...</think><answer>...</answer> layout."""
    tag_count: Annotated[float, Field(ge=0, le=1e6)] = 10.0
    """0.25 for each of the four tags appearing exactly once."""
    structure: Annotated[float, Field(ge=0, le=1e6)] = 15.0
    """GSRM structure reward: the student's steps match the teacher's (needs gsrm and judge)."""
    max_structure_failure_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    """Largest share of one step's structure rewards that may fail (GSRM or judge errors) before
    the learner stops with an error, rather than train on noise; 1 never stops."""

    rules = (
        Rule(
            "",
            "at least one reward weight must be > 0",
            "self.accuracy + self.format + self.tagCount + self.structure > 0.0",
            lambda s: s.accuracy + s.format + s.tag_count + s.structure > 0,
        ),
    )


class GRPOSpec(SpecModel):
    """The GRPO recipe (TRL); defaults are the paper's."""

    learning_rate: Annotated[float, Field(gt=0, le=1)] = 5e-5
    """Peak learning rate."""
    lr_scheduler_type: Literal[
        "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_min_lr"
    ] = "constant_with_warmup"
    """Learning-rate schedule."""
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    """Fraction of the steps spent warming up (not with the constant schedule)."""
    min_learning_rate_ratio: Annotated[float, Field(ge=0, lt=1)] | None = None
    """Final learning rate as a fraction of the peak (cosine_with_min_lr only, and required
    there)."""
    max_grad_norm: Annotated[float, Field(gt=0, le=1e6)] = 0.2
    """Gradient clipping norm."""
    num_generations: Annotated[int, Field(ge=2, le=256)] = 4
    """Completions sampled per prompt (the GRPO group)."""
    per_device_train_batch_size: Annotated[int, Field(ge=1, le=4096)] = 2
    """Completions per device per micro-batch."""
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=4096)] = 4
    """Micro-batches per optimizer step."""
    max_prompt_length: Annotated[int, Field(ge=1, le=MAX_TOKENS)] = 1024
    """Prompt tokens at most: longer prompts are dropped from the dataset when it is prepared
    (a truncated problem would be a different problem)."""
    max_completion_length: Annotated[int, Field(ge=1, le=MAX_TOKENS)] = 4096
    """Completion tokens generated at most."""
    temperature: Annotated[float, Field(gt=0, le=10)] = 0.7
    """Sampling temperature of the rollouts."""
    beta: Annotated[float, Field(ge=0, le=1e3)] = 0.04
    """KL penalty coefficient against the reference model (0 loads no reference model). The
    method does not state it; 0.04 was TRL's default when the paper's runs were made."""
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = "bnpo"
    """How token losses are aggregated (TRL loss_type). The method does not state it; bnpo was
    TRL's default when the paper's runs were made. Pinned here so a TRL upgrade cannot change
    the recipe silently."""
    num_train_epochs: Annotated[float, Field(gt=0, le=1e4)] = 1.0
    """Passes over the (limited) dataset."""
    max_steps: Annotated[int, Field(ge=1, le=MAX_INT32)] | None = None
    """Stop after this many optimizer steps (overrides numTrainEpochs)."""
    save_steps: Annotated[int, Field(ge=1, le=MAX_INT32)] = 10
    """Checkpoint into the store every this many steps."""
    save_total_limit: Annotated[int, Field(ge=1, le=1000)] | None = 3
    """Checkpoints kept in the store (older ones are deleted; resuming needs only the latest).
    A 7B ZeRO-3 checkpoint with optimizer state is over 100 GB. Empty keeps all."""
    logging_steps: Annotated[int, Field(ge=1, le=MAX_INT32)] = 1
    """Write metrics and the progress document every this many steps."""
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 42
    """Training seed."""
    precision: Precision = "bf16"
    """Training precision (fp32 on CPU)."""
    gradient_checkpointing: bool = True
    """Trade compute for memory."""
    system_prompt: str = Field(default=SYSTEM_PROMPT, max_length=8192)
    """System prompt asking for the <think>/<answer> format and a boxed answer."""

    rules = (
        Rule(
            "warmupRatio",
            "must be 0 with lrSchedulerType constant, which has no warmup (use "
            "constant_with_warmup, or set warmupRatio to 0)",
            "self.lrSchedulerType != 'constant' || self.warmupRatio == 0.0",
            lambda s: s.lr_scheduler_type != "constant" or s.warmup_ratio == 0,
        ),
        Rule(
            "perDeviceTrainBatchSize",
            "times gradientAccumulationSteps must be a multiple of numGenerations: each learner "
            "process scores its own generation batch, and a GRPO group split across processes "
            "cannot be dropped whole when its structure reward fails (e.g. raise "
            "gradientAccumulationSteps or lower numGenerations)",
            "(self.perDeviceTrainBatchSize * self.gradientAccumulationSteps)"
            " % self.numGenerations == 0",
            lambda s: (
                (s.per_device_train_batch_size * s.gradient_accumulation_steps) % s.num_generations
                == 0
            ),
        ),
        Rule(
            "minLearningRateRatio",
            "is required with lrSchedulerType cosine_with_min_lr, and only then",
            "(self.lrSchedulerType == 'cosine_with_min_lr') == has(self.minLearningRateRatio)",
            lambda s: (
                (s.lr_scheduler_type == "cosine_with_min_lr")
                == (s.min_learning_rate_ratio is not None)
            ),
        ),
    )


class RolloutSpec(SpecModel):
    """How the student's completions are generated during GRPO.

    server: a separate vLLM server that receives the learner's weights (the paper's topology);
    colocate: vLLM inside each learner process; transformers: the learner generates itself
    (CPU and tiny models).
    """

    mode: Literal["server", "colocate", "transformers"] = "server"
    """server, colocate or transformers."""
    vllm: VLLMServer = Field(default_factory=VLLMServer)
    """The rollout vLLM server (mode server)."""

    rules = (
        Rule(
            "vllm.replicas",
            "must be 1 when mode is server: the learner pushes its weights to one server (for "
            "more throughput raise vllm.tensorParallelSize or pass --data-parallel-size in "
            "vllm.extraArgs)",
            "self.mode != 'server' || self.vllm.replicas == 1",
            lambda s: s.mode != "server" or s.vllm.replicas == 1,
        ),
    )


class DeepSpeedSpec(SpecModel):
    """DeepSpeed ZeRO settings of the learner."""

    stage: Literal[0, 1, 2, 3] = 3
    """ZeRO stage (0 turns ZeRO off: plain data parallel)."""
    offload_optimizer: bool = False
    """Keep optimizer state in CPU memory (stage 2 or 3)."""
    offload_params: bool = False
    """Keep parameters in CPU memory (stage 3)."""

    rules = (
        Rule(
            "offloadParams",
            "needs stage 3",
            "!self.offloadParams || self.stage == 3",
            lambda s: not s.offload_params or s.stage == 3,
        ),
        Rule(
            "offloadOptimizer",
            "needs stage 2 or 3",
            "!self.offloadOptimizer || self.stage >= 2",
            lambda s: not s.offload_optimizer or s.stage >= 2,
        ),
    )


def _tensorboard_only() -> list[Tracker]:
    return ["tensorboard"]


class LearnerSpec(Placement):
    """The GRPO learner: a Kubeflow PyTorchJob running `rlkd train`."""

    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Trainer image; empty uses the operator's default (chart values)."""
    replicas: Annotated[int, Field(ge=1, le=512)] = 1
    """Learner pods: one Master, the rest Workers."""
    gpus_per_replica: Annotated[int, Field(ge=0, le=16)] = 4
    """GPUs per learner pod (0 trains on CPU)."""
    deepspeed: DeepSpeedSpec = Field(default_factory=DeepSpeedSpec)
    """DeepSpeed ZeRO settings."""
    backoff_limit: Annotated[int, Field(ge=0, le=100)] = 3
    """Pod restarts before the PyTorchJob fails; training resumes from the last checkpoint."""
    report_to: list[Tracker] = Field(default_factory=_tensorboard_only, max_length=3)
    """Experiment trackers: tensorboard writes its logs into the run's store (`tensorboard/`);
    wandb and mlflow read their settings and keys from the environment (trackingSecret)."""
    tracking_secret: ObjectName | None = None
    """Secret in the job's namespace whose keys become the learner's environment, e.g.
    WANDB_API_KEY or MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN (never in args or status)."""
    queue_name: LabelName | None = None
    """Kueue LocalQueue the learner waits in (label kueue.x-k8s.io/queue-name on the
    PyTorchJob); empty uses that label on the RLKDJob, if any, else no queue. Kueue then owns
    the learner's suspension and admission-time scheduling, and the inference servers start
    only once Kueue admits the learner."""
    stall_timeout_seconds: Annotated[int, Field(ge=0, le=MAX_INT32)] = 1800
    """A learner whose step has not moved for this long while it runs is Stalled (a hung weight
    sync or collective gives no error): a 7B GRPO step with its checkpoint upload takes minutes,
    not half an hour. 0 turns the watchdog off. Editable on a running job."""
    startup_timeout_seconds: Annotated[int, Field(ge=0, le=MAX_INT32)] = 3600
    """The same budget before the learner's first step after each (re)start, and for its stages
    that take no steps (prepare, evaluations): model loading and the first weight-sync handshake
    with the rollout server (init_communicator) hang silently too. 0: no limit. Editable."""
    restart_on_stall: bool = True
    """Restart a Stalled learner by deleting its pods (the Training Operator recreates them and
    they resume from the newest complete checkpoint); false only reports the stall. Editable."""
    max_stall_restarts: Annotated[int, Field(ge=0, le=100)] = 3
    """Stall restarts before the job fails with reason Stalled (counted apart from
    backoffLimit). Editable."""


class StorageSpec(SpecModel):
    """The S3-compatible artifact store (MinIO, AWS S3, Ceph, SeaweedFS, ...).

    Checkpoints, the progress document, caches and results go under
    `<prefix>/<namespace>/<name>/` in the bucket.
    """

    endpoint: Endpoint
    """Endpoint URL, e.g. http://minio.rlkd-system:9000 or https://s3.eu-west-1.amazonaws.com."""
    bucket: S3Bucket
    """Bucket (created if missing)."""
    prefix: StorePrefix = "rlkd"
    """Key prefix inside the bucket."""
    region: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """Region, for stores that need one."""
    credentials_secret: ObjectName | None = None
    """Secret in the job's namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."""

    rules = (
        Rule(
            "bucket",
            "must not contain two adjacent dots",
            "!self.bucket.contains('..')",
            lambda s: ".." not in s.bucket,
        ),
        Rule(
            "bucket",
            "must not be formatted as an IP address",
            f"!self.bucket.matches('{BUCKET_IP_PATTERN}')",
            lambda s: not re.fullmatch(BUCKET_IP_PATTERN, s.bucket),
        ),
    )


class EvaluationSpec(SpecModel):
    """A greedy evaluation of the student (accuracy and structure alignment), run by the learner
    after training and, with `baseline`, before it too (phase Evaluating each time). Sampled
    rewards during GRPO understate greedy accuracy, so it is measured separately."""

    uri: Ref | None = None
    """Evaluation problems (same columns as the dataset); empty uses held-out rows of the training
    dataset that training did not see."""
    split: str = Field(default="test", min_length=1, max_length=64)
    """Split to read from a hub dataset."""
    limit: Annotated[int, Field(ge=1, le=MAX_INT32)] = 200
    """Evaluate at most this many problems."""
    max_completion_length: Annotated[int, Field(ge=1, le=MAX_TOKENS)] | None = None
    """Tokens generated per problem; empty uses grpo.maxCompletionLength."""
    baseline: bool = True
    """Also evaluate the starting student before training, so the report compares the two."""


# --- pods on real clusters --------------------------------------------------------------------

RESERVED_LABEL_PREFIX = "rlkd.ai/"
RESERVED_LABELS = tuple(
    f"app.kubernetes.io/{name}"
    for name in ("name", "instance", "component", "part-of", "managed-by")
)
"""Label keys the operator sets on every pod (rlkd.k8s.naming.labels) and selects the job's
servers by: `pods.labels` may not set them, nor any key under rlkd.ai/ (a rule of PodSettings)."""


def _cel_strings(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


class EnvVar(SpecModel):
    """One environment variable."""

    name: str = Field(pattern=ENV_NAME_PATTERN, min_length=1, max_length=256)
    """Its name: letters, digits and '_', not starting with a digit."""
    value: str = Field(default="", max_length=4096)
    """Its value."""


class PodSettings(SpecModel):
    """What every pod of the job gets besides what the builders set: identity, registry
    credentials, metadata, environment and security. Unset fields take the operator's defaults
    (chart values); labels, annotations and env are merged with them, the job's value winning."""

    service_account_name: ObjectName | None = None
    """ServiceAccount of every pod, e.g. one bound to a cloud identity (IRSA, GKE Workload
    Identity); empty uses the operator's default, else the namespace's `default`."""
    image_pull_secrets: list[ObjectName] | None = Field(default=None, max_length=16)
    """Secrets (in the job's namespace) for pulling private images; empty uses the operator's
    default list ([] pulls without)."""
    labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=MAX_MAP_KEYS)
    """Extra labels of every pod (not rlkd.ai/* nor the app.kubernetes.io/ keys the operator
    sets)."""
    annotations: dict[str, Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=dict, max_length=MAX_MAP_KEYS
    )
    """Extra annotations of every pod, e.g. {"sidecar.istio.io/inject": "false"}: a service-mesh
    sidecar breaks NCCL and keeps a finished Job's pod running."""
    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment variables of every container, e.g. NCCL_DEBUG=INFO; one the builders
    set themselves (RLKD_*, HF_HOME, ...; rlkd.spec.runtime.BUILDER_ENV) is an error."""
    security: Literal["restricted", "none"] | None = None
    """restricted: a securityContext that passes the `restricted` Pod Security Standard (a
    non-root user, no privilege escalation, every capability dropped, the runtime's seccomp
    profile); none: no securityContext, the image's own user (for images that must run as root or
    need a capability, e.g. IPC_LOCK for RDMA). Empty uses the operator's default (restricted)."""

    rules = (
        Rule(
            "env",
            "names must be unique",
            "!has(self.env) || self.env.all(e, self.env.exists_one(f, f.name == e.name))",
            lambda s: len({e.name for e in s.env}) == len(s.env),
        ),
        qualified_keys("labels"),
        Rule(
            "labels",
            f"must not set {RESERVED_LABEL_PREFIX}* nor {', '.join(RESERVED_LABELS)}: the "
            "operator sets them on every pod and selects the job's pods by them (use another key)",
            f"!has(self.labels) || self.labels.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}')"
            f" && !(k in {_cel_strings(RESERVED_LABELS)}))",
            lambda s: (
                not any(
                    key.startswith(RESERVED_LABEL_PREFIX) or key in RESERVED_LABELS
                    for key in s.labels
                )
            ),
        ),
        qualified_keys("annotations"),
        Rule(
            "env",
            f"must not set {BUILDER_ENV_PREFIX}* nor {', '.join(BUILDER_ENV)}: the operator sets "
            "them on every pod (remove them, or use another name)",
            f"!has(self.env) || self.env.all(e, !e.name.startsWith('{BUILDER_ENV_PREFIX}')"
            f" && !(e.name in {_cel_strings(BUILDER_ENV)}))",
            lambda s: (
                not any(
                    e.name.startswith(BUILDER_ENV_PREFIX) or e.name in BUILDER_ENV for e in s.env
                )
            ),
        ),
    )


class HubSpec(SpecModel):
    """Models and datasets given as Hugging Face Hub ids: where they are cached and the token
    that reads gated or private ones. Unset fields take the operator's defaults (chart values)."""

    cache_claim: ObjectName | None = None
    """PersistentVolumeClaim (in the job's namespace) mounted as the Hugging Face cache (HF_HOME)
    in every server and learner pod, so a model is downloaded once, not on every pod start.
    ReadWriteMany lets pods on several nodes share it; ReadWriteOnce holds them on one node.
    Empty: the operator's default claim, else no cache (each pod downloads into its own disk)."""
    token_secret: ObjectName | None = None
    """Secret (in the job's namespace) with key HF_TOKEN, given to every pod as HF_TOKEN (never in
    args or status); empty: the operator's default, else anonymous downloads."""


class NetworkSpec(SpecModel):
    """Who may reach the job's inference servers (the NetworkPolicy `<job>-inference`)."""

    monitoring_namespace: ObjectName | None = None
    """Namespace whose pods may scrape the servers' /metrics (vLLM serves it on the API port,
    8000); empty: the operator's default, else none."""


RECIPE_FIELDS = ("grpo", "rewards", "rollout", "learner", "evaluation", "storage")
"""What a running learner was started with: its ConfigMap and PyTorchJob are built from them, and
the Training Operator does not restart running pods for a changed spec, so an edit would be
silently ignored or half-applied. They are fixed once the job exists, but for WATCHDOG_FIELDS."""
WATCHDOG_FIELDS = (
    "stall_timeout_seconds",
    "startup_timeout_seconds",
    "restart_on_stall",
    "max_stall_restarts",
)
"""What only the operator's stall watchdog reads: editable on a running job, so a false alarm is
fixed without a new job."""


def _frozen_paths() -> tuple[str, ...]:
    """The recipe's fields as camelCase paths below spec: `learner` field by field, so that its
    WATCHDOG_FIELDS stay editable."""
    names = [name for name in LearnerSpec.model_fields if name not in WATCHDOG_FIELDS]
    learner = tuple(f"learner.{to_camel(name)}" for name in names)
    return tuple(f for f in RECIPE_FIELDS if f != "learner") + learner


def _frozen_once_created(field: str) -> Rule:
    """A transition rule: `field` (optional or not) keeps its value once the job exists."""
    return Rule(
        field,
        "is immutable once the job exists: a running learner cannot take a new recipe (create a "
        "new RLKDJob to change it)",
        f"has(self.{field}) == has(oldSelf.{field})"
        f" && (!has(self.{field}) || self.{field} == oldSelf.{field})",
    )


class RLKDJobSpec(SpecModel):
    """An RLKD distillation run: a student learns, with GRPO, to reason in the teacher's
    structure, rewarded by a GSRM and a judge."""

    student: StudentSpec
    """The model being distilled into."""
    dataset: DatasetSpec
    """Training problems, gold answers and teacher reasoning."""
    teacher: TeacherSpec = Field(default_factory=TeacherSpec)
    """Where the teacher's reasoning comes from."""
    gsrm: GSRMSpec | None = None
    """The Generative Structure Reward Model that decomposes reasoning into steps (required when
    rewards.structure > 0); `gsrm.build` builds it first."""
    judge: InferenceSpec | None = None
    """The judge that compares teacher and student steps with yes/no answers (required when
    rewards.structure > 0)."""
    rewards: RewardsSpec = Field(default_factory=RewardsSpec)
    """Reward weights."""
    grpo: GRPOSpec = Field(default_factory=GRPOSpec)
    """The GRPO recipe."""
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    """How rollouts are generated."""
    learner: LearnerSpec = Field(default_factory=LearnerSpec)
    """The learner pods."""
    evaluation: EvaluationSpec | None = None
    """Evaluate the trained student greedily before the job succeeds; empty skips evaluation."""
    storage: StorageSpec | None = None
    """The artifact store; empty uses the operator's default store (chart values)."""
    suspend: bool = False
    """Suspend the run: the learner stops and inference scales to zero; false resumes."""
    ttl_seconds_after_finished: Annotated[int, Field(ge=0, le=MAX_INT32)] | None = None
    """Delete the job (and its children) this long after it succeeds or fails."""
    pods: PodSettings | None = None
    """ServiceAccount, image pull Secrets, extra labels, annotations and env, and the security
    level of every pod; empty uses the operator's defaults."""
    hub: HubSpec | None = None
    """The Hugging Face cache and token for hub-id models; empty uses the operator's defaults."""
    network: NetworkSpec | None = None
    """Who may reach the inference servers besides the job's own pods."""

    rules = (
        Rule(
            "gsrm",
            "is required when rewards.structure > 0 (or set rewards.structure to 0)",
            "self.rewards.structure == 0.0 || has(self.gsrm)",
            lambda s: s.rewards.structure == 0 or s.gsrm is not None,
        ),
        Rule(
            "judge",
            "is required when rewards.structure > 0 (or set rewards.structure to 0)",
            "self.rewards.structure == 0.0 || has(self.judge)",
            lambda s: s.rewards.structure == 0 or s.judge is not None,
        ),
        Rule(
            "rollout.mode",
            "must be transformers when learner.gpusPerReplica is 0 (vLLM rollouts need GPUs)",
            "self.learner.gpusPerReplica > 0 || self.rollout.mode == 'transformers'",
            lambda s: s.learner.gpus_per_replica > 0 or s.rollout.mode == "transformers",
        ),
        Rule(
            "grpo.precision",
            "must be fp32 when learner.gpusPerReplica is 0 (bf16 and fp16 training need GPUs)",
            "self.learner.gpusPerReplica > 0 || self.grpo.precision == 'fp32'",
            lambda s: s.learner.gpus_per_replica > 0 or s.grpo.precision == "fp32",
        ),
        Rule(
            "rollout.vllm.maxModelLen",
            "must be at least grpo.maxPromptLength + grpo.maxCompletionLength: a rollout is a "
            "prompt and its completion in one context (raise maxModelLen, or lower "
            "grpo.maxCompletionLength or grpo.maxPromptLength)",
            "!has(self.rollout.vllm.maxModelLen) || self.rollout.vllm.maxModelLen >="
            " self.grpo.maxPromptLength + self.grpo.maxCompletionLength",
            lambda s: (
                s.rollout.vllm.max_model_len is None
                or s.rollout.vllm.max_model_len
                >= s.grpo.max_prompt_length + s.grpo.max_completion_length
            ),
        ),
        Rule(
            "gsrm.build",
            "needs teacher.source dataset: the annotator decomposes the teacher's paths in "
            "dataset.columns.teacherReasoning",
            "!has(self.gsrm) || !has(self.gsrm.build) || self.teacher.source == 'dataset'",
            lambda s: s.gsrm is None or s.gsrm.build is None or s.teacher.source == "dataset",
        ),
        Rule(
            "gsrm.build.gate.minStepAgreement",
            "needs spec.judge: the judge measures per-step agreement (name one, or set it to 0)",
            "!has(self.gsrm) || !has(self.gsrm.build) || self.gsrm.build.gate.minStepAgreement"
            " == 0.0 || has(self.judge)",
            lambda s: (
                s.gsrm is None
                or s.gsrm.build is None
                or s.gsrm.build.gate.min_step_agreement == 0
                or s.judge is not None
            ),
        ),
        *(_frozen_once_created(field) for field in _frozen_paths()),
        Rule(
            "",
            "gsrm and judge cannot be added or removed once the job exists",
            "has(self.gsrm) == has(oldSelf.gsrm) && has(self.judge) == has(oldSelf.judge)",
        ),
    )
