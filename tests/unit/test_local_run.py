"""`rlkd run` on one machine: what changes from the cluster, and which output it may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlkd.local import RunError, claim_output, one_machine
from rlkd.spec.validate import load_job, parse_job

PAPER = "manifests/examples/paper-qwen2.5-math-7b.yaml"
BUILD = "manifests/examples/gsrm-build.yaml"


def test_vllm_roles_run_in_process_unless_a_server_url_is_given() -> None:
    job = load_job(PAPER)
    local, notes = one_machine(job, {"RLKD_JUDGE_URL": "http://127.0.0.1:9/v1"}, cuda=False)
    assert local.spec.gsrm.backend == "transformers"
    assert local.spec.judge.backend == "vllm"  # reached at $RLKD_JUDGE_URL
    assert local.spec.rollout.mode == "transformers"
    assert local.spec.grpo.precision == "fp32"
    assert local.spec.learner.deepspeed.stage == 0
    assert any("RLKD_JUDGE_URL" in n for n in notes)
    assert any("loaded in-process with transformers" in n for n in notes)


@pytest.mark.parametrize(
    ("env", "annotator", "noted"),
    [
        ({}, "transformers", "annotator: Qwen/Qwen2.5-7B-Instruct loaded in-process"),
        (
            {"RLKD_ANNOTATOR_URL": "http://127.0.0.1:9/v1"},
            "vllm",
            "annotator: the vLLM server at $RLKD_ANNOTATOR_URL",
        ),
    ],
)
def test_a_gsrm_build_runs_here_like_the_other_roles(
    env: dict[str, str], annotator: str, noted: str
) -> None:
    body = load_job(BUILD).to_dict()
    body["spec"]["gsrm"]["build"]["annotator"] = {
        "backend": "vllm",
        "model": "Qwen/Qwen2.5-7B-Instruct",
    }
    local, notes = one_machine(parse_job(body), env, cuda=False)
    build = local.spec.gsrm.build
    assert build.annotator.backend == annotator
    assert build.training.precision == "fp32"
    assert local.spec.gsrm.backend == "transformers"
    assert any(n.startswith(noted) for n in notes), notes
    assert "gsrm build: precision bf16 needs a GPU, training in fp32" in notes
    gpu, _ = one_machine(load_job(BUILD), {}, cuda=True)
    assert gpu.spec.gsrm.build.training == load_job(BUILD).spec.gsrm.build.training
    assert gpu.spec.gsrm.build.annotator.backend == "openai"


def test_a_gpu_machine_keeps_the_recipe() -> None:
    job = load_job(PAPER)
    local, _ = one_machine(job, {}, cuda=True)
    assert local.spec.grpo == job.spec.grpo and local.spec.rollout == job.spec.rollout


def test_an_output_directory_holds_one_run(tmp_path: Path) -> None:
    tiny = load_job("manifests/examples/tiny-cpu.yaml")
    claim_output(tiny, tmp_path)
    claim_output(tiny, tmp_path)  # the same run: resumes
    other = parse_job({**tiny.to_dict(), "metadata": {"name": "other"}})
    with pytest.raises(RunError, match="holds the run of job 'tiny-arithmetic'"):
        claim_output(other, tmp_path)
    body = tiny.to_dict()
    body["spec"]["grpo"]["learningRate"] = 0.5
    with pytest.raises(RunError, match="with a different recipe"):
        claim_output(parse_job(body), tmp_path)
