"""The typed RLKDJob model: the paper's recipe as defaults, strict types, the rules."""

from __future__ import annotations

import pytest

from rlkd.errors import SpecError
from rlkd.spec import RLKDJob
from rlkd.spec.validate import parse_job
from rlkd.spec.yamlio import load_all


def minimal(**spec: object) -> dict:
    return {
        "apiVersion": "rlkd.ai/v1alpha1",
        "kind": "RLKDJob",
        "metadata": {"name": "job"},
        "spec": {
            "student": {"model": "Qwen/Qwen2.5-Math-7B"},
            "dataset": {"uri": "s3://data/train.jsonl"},
            "gsrm": {"model": "s3://models/gsrm"},
            "judge": {"model": "Qwen/Qwen2.5-7B-Instruct"},
            **spec,
        },
    }


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("rewards.accuracy", 15.0),
        ("rewards.format", 10.0),
        ("rewards.tag_count", 10.0),
        ("rewards.structure", 15.0),
        ("grpo.learning_rate", 5e-5),
        ("grpo.lr_scheduler_type", "constant_with_warmup"),
        ("grpo.warmup_ratio", 0.1),
        ("grpo.max_grad_norm", 0.2),
        ("grpo.num_generations", 4),
        ("grpo.per_device_train_batch_size", 2),
        ("grpo.gradient_accumulation_steps", 4),
        ("grpo.max_prompt_length", 1024),
        ("grpo.max_completion_length", 4096),
        ("grpo.temperature", 0.7),
        ("grpo.precision", "bf16"),
        ("grpo.gradient_checkpointing", True),
        ("grpo.save_steps", 10),
        ("learner.gpus_per_replica", 4),
        ("learner.deepspeed.stage", 3),
        ("rollout.mode", "server"),
        ("teacher.source", "dataset"),
        ("gsrm.backend", "vllm"),
        ("suspend", False),
    ],
)
def test_defaults_are_the_papers_recipe(attr: str, expected: object) -> None:
    value = parse_job(minimal()).spec
    for part in attr.split("."):
        value = getattr(value, part)
    assert value == expected


def test_system_prompt_asks_for_the_format_and_a_boxed_answer() -> None:
    prompt = parse_job(minimal()).spec.grpo.system_prompt
    for needle in ("<think>", "</think>", "<answer>", "</answer>", "\\boxed{}"):
        assert needle in prompt


def test_round_trip_through_the_manifest_form() -> None:
    job = parse_job(minimal(grpo={"learningRate": 1e-4}))
    again = parse_job(job.to_dict())
    assert again == job
    assert job.to_dict()["spec"]["grpo"]["learningRate"] == 1e-4


@pytest.mark.parametrize(
    ("grpo", "line"),
    [
        ({"numGenerations": "4"}, "spec.grpo.numGenerations: must be an integer (got '4')"),
        (
            {"gradientCheckpointing": "yes"},
            "spec.grpo.gradientCheckpointing: must be true or false",
        ),
        ({"temperature": True}, "spec.grpo.temperature: must be a number (got true)"),
    ],
)
def test_types_are_strict_like_the_api_server(grpo: dict, line: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_job(minimal(grpo=grpo))
    assert exc.value.problems[0].startswith(line)


def test_integers_are_accepted_for_numbers() -> None:
    assert parse_job(minimal(grpo={"temperature": 1})).spec.grpo.temperature == 1.0


@pytest.mark.parametrize(
    "ref",
    [
        "s3://models/qwen2.5-7b",
        "s3://my.bucket/a/b/",
        "store://models/tiny-student",
        "/models/qwen",
        "Qwen/Qwen2.5-Math-7B",
        "gpt2",
    ],
)
def test_model_references_accepted(ref: str) -> None:
    assert parse_job(minimal(student={"model": ref})).spec.student.model == ref


@pytest.mark.parametrize(
    "ref",
    ["s3://Models/x", "s3://b", "store:///abs", "store://a/../b", "/a/./b", "hf:x", "a/b/c", ""],
)
def test_model_references_rejected(ref: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_job(minimal(student={"model": ref}))
    assert exc.value.problems[0].startswith("spec.student.model: ")


BUILD = {
    "baseModel": "Qwen/Qwen2.5-7B-Instruct",
    "annotator": {"backend": "openai", "model": "gpt-4o", "url": "https://api.openai.com/v1"},
}


@pytest.mark.parametrize(
    ("spec", "line"),
    [
        ({"rewards": {"structure": 0}, "gsrm": None, "judge": None}, None),
        ({"gsrm": {"backend": "rule"}, "judge": {"backend": "rule"}}, None),
        ({"gsrm": {"backend": "openai", "model": "m", "url": "http://gsrm:8000/v1"}}, None),
        (
            {"gsrm": {"backend": "transformers"}},
            "spec.gsrm.model: is required unless backend is rule",
        ),
        (
            {"gsrm": {"model": "m", "url": "http://x"}},
            "spec.gsrm.url: is required when backend is openai, and only then",
        ),
        ({"teacher": {"source": "model", "model": {"model": "deepseek-ai/DeepSeek-R1"}}}, None),
        (
            {"teacher": {"source": "dataset", "model": {"model": "m"}}},
            "spec.teacher.model: is required when source is model, and only then",
        ),
        ({"gsrm": {"model": "store://gsrm/built", "build": BUILD}}, None),
        ({"gsrm": {"model": "s3://models/gsrm", "backend": "transformers", "build": BUILD}}, None),
        (
            {"gsrm": {"model": "Qwen/Qwen2.5-7B-Instruct", "build": BUILD}},
            "spec.gsrm.model: must be a store:// or s3:// reference when build is set: it names "
            "where the built GSRM goes",
        ),
        (
            {
                "gsrm": {
                    "model": "store://gsrm/built",
                    "backend": "openai",
                    "url": "http://gsrm:8000/v1",
                    "build": BUILD,
                }
            },
            "spec.gsrm.backend: must be vllm or transformers when build is set: the built GSRM "
            "is served from the store",
        ),
        (
            {"gsrm": {"model": "store://g", "build": {**BUILD, "annotator": {"backend": "rule"}}}},
            "spec.gsrm.build.annotator.backend: must be vllm, openai or transformers: the "
            "annotator is a model",
        ),
        (
            {
                "gsrm": {"model": "store://gsrm/built", "build": BUILD},
                "teacher": {"source": "decompositions"},
            },
            "spec.gsrm.build: needs teacher.source dataset: the annotator decomposes the "
            "teacher's paths in dataset.columns.teacherReasoning",
        ),
        (
            {
                "rewards": {"structure": 0},
                "judge": None,
                "gsrm": {
                    "model": "store://g",
                    "build": {**BUILD, "gate": {"minStepAgreement": 0.5}},
                },
            },
            "spec.gsrm.build.gate.minStepAgreement: needs spec.judge: the judge measures per-step "
            "agreement (name one, or set it to 0)",
        ),
        ({"learner": {"deepspeed": {"stage": 2, "offloadOptimizer": True}}}, None),
        (
            {"learner": {"deepspeed": {"stage": 1, "offloadOptimizer": True}}},
            "spec.learner.deepspeed.offloadOptimizer: needs stage 2 or 3",
        ),
        (
            {
                "learner": {"replicas": 2, "gpusPerReplica": 0},
                "grpo": {"numGenerations": 8, "precision": "fp32"},
                "rollout": {"mode": "transformers"},
            },
            None,
        ),
        (
            {"learner": {"gpusPerReplica": 0}, "grpo": {"precision": "fp32"}},
            "spec.rollout.mode: must be transformers when learner.gpusPerReplica is 0"
            " (vLLM rollouts need GPUs)",
        ),
        (
            {"learner": {"tolerations": [{"operator": "Exists", "effect": "NoSchedule"}]}},
            None,
        ),
        (
            {"learner": {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}},
            "spec.learner.tolerations[0].value: must be empty when operator is Exists",
        ),
        (
            {"learner": {"tolerations": [{"key": "k", "tolerationSeconds": 60}]}},
            "spec.learner.tolerations[0].tolerationSeconds: needs effect NoExecute",
        ),
        (
            {"learner": {"gpusPerReplica": 1}, "grpo": {"gradientAccumulationSteps": 1}},
            "spec.grpo.perDeviceTrainBatchSize: times gradientAccumulationSteps must be a multiple"
            " of numGenerations: each learner process scores its own generation batch, and a GRPO"
            " group split across processes cannot be dropped whole when its structure reward fails"
            " (e.g. raise gradientAccumulationSteps or lower numGenerations)",
        ),
    ],
)
def test_cross_field_rules(spec: dict, line: str | None) -> None:
    doc = minimal(**spec)
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    if line is None:
        parse_job(doc)
        return
    with pytest.raises(SpecError) as exc:
        parse_job(doc)
    assert exc.value.problems == [line]


def test_every_problem_is_reported_not_just_the_first() -> None:
    doc = minimal(grpo={"learningRate": 0, "numGenerations": 1}, learner={"replicas": 0})
    doc["spec"]["dataset"]["limit"] = 1
    doc["spec"]["dataset"]["fraction"] = 0.5
    with pytest.raises(SpecError) as exc:
        parse_job(doc)
    assert sorted(exc.value.problems) == [
        "spec.dataset.fraction: set limit or fraction, not both",
        "spec.grpo.learningRate: must be > 0 (got 0)",
        "spec.grpo.numGenerations: must be >= 2 (got 1)",
        "spec.learner.replicas: must be >= 1 (got 0)",
    ]


def test_metadata_typos_are_caught_and_server_fields_accepted() -> None:
    doc = minimal()
    doc["metadata"] |= {"uid": "1", "resourceVersion": "7", "generation": 2, "lables": {}}
    with pytest.raises(SpecError) as exc:
        parse_job(doc)
    assert exc.value.problems == ["metadata.lables: unknown field; did you mean labels?"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5e-5", 5e-5),
        ("1E3", 1000),
        ("1.5", 1.5),
        ("'5e-5'", "5e-5"),
        ("5e", "5e"),
        ("20.0", 20),  # JSON has one number type: kubectl sends the integer 20
        ("2024-06-01", "2024-06-01"),  # no timestamps
        ("12:30", "12:30"),  # no base-60 integers
        ("y", True),
        ("n", False),
        ("off", False),
        ("0x10", 16),
        ("010", 8),
        ("1_000", 1000),
        ("+1", 1),
        (".5", 0.5),
    ],
)
def test_yaml_reads_scalars_like_kubectl(text: str, value: object) -> None:
    [doc] = load_all(f"a: {text}\n")
    assert doc == {"a": value} and type(doc["a"]) is type(value)


def test_yaml_keys_merges_and_anchors() -> None:
    [doc] = load_all("1: a\ntrue: b\nbase: &b {x: 1, k: 2}\nmerged:\n  <<: *b\n  k: 3\n")
    assert doc == {"1": "a", "true": "b", "base": {"x": 1, "k": 2}, "merged": {"x": 1, "k": 3}}


@pytest.mark.parametrize("text", ["? [a]\n: 1\n", "{a: 1}: 1\n"])
def test_yaml_keys_must_be_plain_values(text: str) -> None:
    import yaml

    with pytest.raises(yaml.YAMLError, match="found a key that is a list or a mapping"):
        load_all(text)


def test_snake_case_names_are_unknown_fields() -> None:
    with pytest.raises(SpecError) as exc:
        parse_job(minimal(grpo={"max_steps": 20}))
    assert exc.value.problems == ["spec.grpo.max_steps: unknown field; did you mean maxSteps?"]


@pytest.mark.parametrize(
    ("prefix", "ok"),
    [
        ("", True),
        ("rlkd", True),
        ("team-a/runs.v2", True),
        ("a/../b", False),
        ("./a", False),
        ("/a", False),
        ("a/", False),
    ],
)
def test_storage_prefix_is_a_store_key(prefix: str, ok: bool) -> None:
    storage = {"endpoint": "http://minio:9000", "bucket": "rlkd", "prefix": prefix}
    if ok:
        assert parse_job(minimal(storage=storage)).spec.storage.prefix == prefix
        return
    with pytest.raises(SpecError) as exc:
        parse_job(minimal(storage=storage))
    assert exc.value.problems[0].startswith("spec.storage.prefix: must be '' or path segments")


def test_code_may_build_models_by_python_name() -> None:
    from rlkd.spec import GRPOSpec

    assert GRPOSpec(max_steps=20).to_dict()["maxSteps"] == 20


def test_nulls_are_pruned_like_the_api_server_does() -> None:
    job = parse_job(minimal(rollout=None, storage=None, grpo={"maxSteps": None}))
    assert job.spec.rollout.mode == "server" and job.spec.grpo.max_steps is None


def test_infinity_is_not_a_number_kubectl_can_send() -> None:
    with pytest.raises(SpecError) as exc:
        parse_job(minimal(grpo={"maxGradNorm": float("inf")}))
    assert exc.value.problems[0].startswith("spec.grpo.maxGradNorm: ")


def test_yaml_duplicate_keys_are_errors() -> None:
    import yaml

    with pytest.raises(yaml.YAMLError, match="duplicate key 'grpo'"):
        load_all("spec:\n  grpo: {}\n  grpo: {}\n")


def test_a_job_is_immutable_in_memory() -> None:
    job = parse_job(minimal())
    with pytest.raises(Exception, match="frozen"):
        job.spec.grpo.learning_rate = 1.0  # type: ignore[misc]
    assert isinstance(job, RLKDJob)
