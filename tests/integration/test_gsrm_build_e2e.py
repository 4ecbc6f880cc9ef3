"""Issue 14 end to end: a GSRM built from a job's teacher paths and put to work, with real parts
only (the S3 server, an OpenAI-compatible HTTP server, TRL's SFT, transformers).

The toy domain's teacher paths (toy://arithmetic) are annotated by an HTTP server that answers
what an exact annotator would (the scripted teacher's steps, in the canonical format), except for
three paths: one malformed until reminded, two malformed for good (rejected). `rlkd annotate`,
`rlkd train-gsrm` and `rlkd eval-gsrm` run through the CLI entry on a job whose store is the S3
server; the built GSRM, served by the transformers backend from store://, then scores a student
completion with the structure reward, and `rlkd run` trains on the same job with it, skipping the
finished build. A second test runs the build inside `rlkd run` (a local store), where a GSRM that
misses its gate stops the run.

Measured on this project's 2-core machine, 40 paths (38 accepted), 6 held out: 100 SFT steps of
batch 4 at lr 5e-3 take the loss from about 6.5 to about 0.6 (70 s with the cores to itself, 150 s
beside other test runs; the whole test 220 s then). The GSRM then decomposes 5 of the 6 held-out
paths into steps (parse rate 0.833; on the sixth it runs past gsrm.request.maxTokens 256) but
writes the annotator's step count on none of them (200 steps at lr 3e-3 reached 1.0 on both, in
twice the time). The gate asks what was measured: minParseRate 0.8, the other two 0.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from rlkd.build.annotate import teacher_paths
from rlkd.build.records import REJECTED_PREFIX, read_records
from rlkd.cli import main
from rlkd.gsrm.backends.chat import ChatDecomposer
from rlkd.gsrm.backends.transformers import TransformersChat
from rlkd.job_rewards import build_structure_engine
from rlkd.models import model_loader
from rlkd.rewards import StructureReward
from rlkd.spec.progress import (
    ANNOTATE_KEY,
    ANNOTATIONS_PREFIX,
    GSRM_BUILD_PREFIX,
    GSRM_EVALUATION_KEY,
    PROGRESS_KEY,
    AnnotateSummary,
    GSRMEvaluation,
)
from rlkd.spec.runtime import ANNOTATOR_KEY_ENV
from rlkd.spec.validate import parse_job
from rlkd.spec.yamlio import dump_all
from rlkd.store import S3Config, S3Store
from rlkd.store.base import Store, SubStore
from rlkd.store.job import JobStores, local_stores, s3_stores
from rlkd.toy import arithmetic
from rlkd.train.checkpoints import upload_folder
from tests.gsrm_build import build_base_model, build_job_document, toy_decomposition, with_build
from tests.openai_stub import OpenAIStub, StubReply
from tests.s3server import S3Server

KEY = "sk-e2e-5d1f0a9c"
PATHS = 40
HELD_OUT = 6
SFT_STEPS = 100
REMINDED = "Write the whole decomposition again"
NO_STEPS = "I worked out each group, then added the results from the left."


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base_model(tmp_path_factory.mktemp("models") / "base")


def problem_of(prompt: str) -> str:
    """The path's problem in a decomposition prompt (after the worked example's)."""
    return prompt.split("Problem:\n")[-1].split("\n")[0]


class Annotator:
    """Replies as an exact annotator would, but for `fixable` (steps without answers until it is
    reminded) and `hopeless` (never a step, never all parts)."""

    def __init__(self, fixable: str = "", hopeless: tuple[str, ...] = ()) -> None:
        self.fixable = fixable
        self.hopeless = hopeless

    def __call__(self, prompt: str) -> StubReply:
        problem = problem_of(prompt)
        good = toy_decomposition(problem)
        partial = "\n".join(line for line in good.splitlines() if not line.startswith("[Answer"))
        if problem == self.fixable and REMINDED not in prompt:
            return StubReply(partial)
        if problem in self.hopeless[:1]:
            return StubReply(NO_STEPS)
        if problem in self.hopeless[1:]:
            return StubReply(partial)
        return StubReply(good)


def e2e_document(name: str, base: str, url: str, **gate: float) -> dict[str, Any]:
    """A job that annotates 40 toy paths at `url` and builds its GSRM from `base` in SFT_STEPS
    CPU steps, gated as `gate` says."""
    document = with_build(
        build_job_document(
            name,
            base,
            maxSteps=SFT_STEPS,
            learningRate=5e-3,
            lrSchedulerType="constant_with_warmup",
            warmupRatio=0.05,
            perDeviceTrainBatchSize=4,
            saveSteps=50,
        ),
        annotator={
            "backend": "openai",
            "model": "annotator-llm",
            "url": url,
            "request": {"maxConcurrency": 8, "maxRetries": 1},
        },
        annotatorKeySecret="annotator-key",
        heldOut=HELD_OUT,
        gate=gate,
    )
    spec = document["spec"]
    spec["dataset"]["limit"] = PATHS
    spec["gsrm"]["request"] = {"maxTokens": 256, "maxConcurrency": 4}
    return document


def losses(out: str) -> list[float]:
    """The per-step training losses the Trainer printed."""
    return [float(x) for x in re.findall(r"'loss': '?([0-9.]+)", out)]


@pytest.mark.s3
def test_a_gsrm_is_annotated_built_gated_served_and_scores_completions(
    tmp_path: Path,
    s3_server: S3Server,
    s3_config: S3Config,
    base_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.credentials.secret_key)
    monkeypatch.setenv(ANNOTATOR_KEY_ENV, KEY)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the commands' default working directories
    shared = S3Store(S3Config(**{**vars(s3_config), "prefix": "rlkd"}))
    upload_folder(shared, base_model, "models/base/")
    build: Store = SubStore(
        S3Store(S3Config(**{**vars(s3_config), "prefix": "rlkd/lab/e2e"})), GSRM_BUILD_PREFIX
    )
    annotator = Annotator()
    with OpenAIStub(annotator) as stub:
        document = e2e_document(
            "e2e",
            "store://models/base",
            stub.url,
            minParseRate=0.8,
            minStepCountAgreement=0.0,
            minStepAgreement=0.0,
        )
        document["spec"]["storage"] = {
            "endpoint": s3_server.endpoint,
            "bucket": s3_config.bucket,
            "prefix": "rlkd",
        }
        job_file = tmp_path / "job.yaml"
        job_file.write_text(dump_all([document]))
        job = parse_job(document)
        stores = s3_stores(job)
        problems = [p.request.problem for p in teacher_paths(job, stores)]
        annotator.fixable, annotator.hopeless = problems[0], (problems[1], problems[2])

        # Annotate: every path asked once, the three malformed ones once more with the reminder.
        assert main(["annotate", str(job_file)]) == 0
        out = capsys.readouterr().out
        assert out.splitlines()[-1] == (
            f"annotate: {PATHS} paths: accepted {PATHS - 2}, rejected 2, failed 0, done before 0;"
            " rejected: missing_parts 1, no_steps 1"
        )
        assert len(stub.requests) == PATHS + 3
        assert stub.authorizations == [f"Bearer {KEY}"] * len(stub.requests)
        records = read_records(build, ANNOTATIONS_PREFIX)
        assert len(records) == PATHS - 2
        for record in records:
            problem = problem_of(record["prompt"][1]["content"])
            assert record["completion"][0]["content"] == toy_decomposition(problem)
        rejected = {r["problem"]: r["reason"] for r in read_records(build, REJECTED_PREFIX)}
        assert rejected == {problems[1]: "no_steps", problems[2]: "missing_parts"}
        summary = AnnotateSummary.model_validate(build.get_json(ANNOTATE_KEY), by_name=False)
        assert (summary.finished, summary.accepted, summary.reminded) == (True, PATHS - 2, 3)

    # Train: the loss falls, the GSRM is published at gsrm.model, the build's progress finished.
    assert main(["train-gsrm", str(job_file)]) == 0
    out = capsys.readouterr().out
    assert f"on {PATHS - 2 - HELD_OUT} decompositions ({HELD_OUT} held out for eval-gsrm)" in out
    curve = losses(out)
    assert len(curve) == SFT_STEPS
    assert sum(curve[-10:]) / 10 < curve[0] / 4, curve
    model_uri = shared.uri_for("gsrm/e2e")
    progress = build.get_json(PROGRESS_KEY)
    assert (progress["stage"], progress["model"], progress["step"]) == (
        "finished",
        model_uri,
        SFT_STEPS,
    )
    assert shared.exists("gsrm/e2e/config.json") and shared.exists("gsrm/e2e/model.safetensors")

    # Evaluate: the gate passes; its report is in the store.
    assert main(["eval-gsrm", str(job_file)]) == 0
    out = capsys.readouterr().out
    assert f"gate: passed on {HELD_OUT} examples" in out
    report = GSRMEvaluation.model_validate(build.get_json(GSRM_EVALUATION_KEY))
    assert report.passed and report.examples == HELD_OUT and report.parse_rate >= 0.8
    assert build.get_json(PROGRESS_KEY).get("failure") is None
    assert sorted(build.list("")) == sorted(
        [
            ANNOTATE_KEY,
            GSRM_EVALUATION_KEY,
            PROGRESS_KEY,
            *[k for k in build.list(ANNOTATIONS_PREFIX)],
            *[k for k in build.list(REJECTED_PREFIX)],
            *[k for k in build.list("checkpoints/")],
        ]
    )

    # Serve it with the transformers backend from store://, and score a student completion of one
    # of the run's problems that takes the teacher's first group first, then another order: a
    # number, not an error.
    problem = arithmetic.parse_problem(problems[3])
    score = served_score(job, stores, tmp_path / "serve", problem)
    assert score is not None and 0 <= score <= 5


def served_score(
    job: Any, stores: JobStores, cache: Path, problem: arithmetic.Problem
) -> float | None:
    """The structure reward of one student completion, scored by the job's GSRM (transformers,
    loaded from the store through the engine factory) and its judge (rule)."""
    engine = build_structure_engine(job.spec, stores.run, local=model_loader(stores, cache))
    assert isinstance(engine.decomposer, ChatDecomposer)
    assert isinstance(engine.decomposer.model, TransformersChat)
    assert engine.decomposer.model_id == "store://gsrm/e2e"
    reward = StructureReward(engine, job.spec)
    first, *rest = problem.teacher_order
    completion = arithmetic.completion(problem, (first, *reversed(rest)))
    try:
        [score] = asyncio.run(
            reward(
                [problem.text],
                [[{"role": "assistant", "content": completion}]],
                problem=[problem.text],
                teacher_reasoning=[arithmetic.reasoning(problem, problem.teacher_order)],
            )
        )
    finally:
        reward.close()
    assert reward.errors == {}, reward.errors
    return score


def test_rlkd_run_builds_the_gsrm_first_and_stops_on_a_missed_gate(
    tmp_path: Path, base_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The build inside `rlkd run`, on a local store: annotate, train-gsrm (4 steps: a GSRM
    that writes no step within gsrm.request.maxTokens 8), eval-gsrm, whose gate stops the run
    before GRPO with the gate's line; the same command again asks the annotator nothing, trains
    nothing, and stops at the gate again."""
    with OpenAIStub(Annotator()) as stub:
        document = build_job_document("gated", str(base_model))
        document = with_build(
            document, annotator={"backend": "openai", "model": "annotator-llm", "url": stub.url}
        )
        document["spec"]["dataset"]["limit"] = 8
        job_file = tmp_path / "job.yaml"
        job_file.write_text(dump_all([document]))
        out_dir = tmp_path / "run"
        gate_line = (
            "rlkd run: the GSRM misses its gate: parse rate 0.000 is below 0.9 "
            "(spec.gsrm.build.gate.minParseRate)"
        )

        assert main(["run", str(job_file), "--output", str(out_dir)]) == 1
        out, err = capsys.readouterr()
        phases = [
            line.split(":")[0]
            for line in out.splitlines()
            if line.startswith(("annotate:", "train-gsrm:", "eval-gsrm:", "train:"))
        ]
        assert phases == ["annotate", "annotate", "train-gsrm", "eval-gsrm"]
        assert "annotate: 8 paths: accepted 8, rejected 0, failed 0, done before 0" in out
        assert err.splitlines()[-1] == gate_line
        assert len(stub.requests) == 8

        stores = local_stores(parse_job(document), out_dir / "store")
        build = SubStore(stores.run, GSRM_BUILD_PREFIX)
        assert build.get_json(PROGRESS_KEY)["failure"].startswith("the GSRM misses its gate")
        assert not stores.run.exists(PROGRESS_KEY)  # GRPO never started
        assert stores.shared.exists("gsrm/gated/config.json")

        assert main(["run", str(job_file), "--output", str(out_dir)]) == 1
        out, err = capsys.readouterr()
        assert "already finished: the GSRM is at" in out
        assert err.splitlines()[-1] == gate_line
        assert len(stub.requests) == 8  # nothing asked again


def test_rlkd_run_builds_the_gsrm_then_trains_with_it_and_a_rerun_skips_the_build(
    tmp_path: Path, base_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gate that asks nothing (minParseRate 0) lets a 4-step GSRM through: the run goes on to
    prepare and GRPO with it (its decompositions cut at maxTokens 8 are counted failures, which
    rewards.maxStructureFailureFraction 1 lets through); the same command again finds the build
    finished in the store and the run finished."""
    with OpenAIStub(Annotator()) as stub:
        document = with_build(
            build_job_document("built", str(base_model)),
            annotator={"backend": "openai", "model": "annotator-llm", "url": stub.url},
            gate={"minParseRate": 0.0},
        )
        spec = document["spec"]
        spec["dataset"]["limit"] = 8
        spec["grpo"] = {
            "maxSteps": 2,
            "numGenerations": 2,
            "perDeviceTrainBatchSize": 2,
            "gradientAccumulationSteps": 1,
            "maxCompletionLength": 8,
            "saveSteps": 2,
            "precision": "fp32",
            "gradientCheckpointing": False,
        }
        spec["rewards"] = {"maxStructureFailureFraction": 1.0}
        job_file = tmp_path / "job.yaml"
        job_file.write_text(dump_all([document]))
        out_dir = tmp_path / "run"

        assert main(["run", str(job_file), "--output", str(out_dir)]) == 0
        out = capsys.readouterr().out
        phases = [
            line.split(":")[0]
            for line in out.splitlines()
            if line.startswith(("annotate:", "train-gsrm:", "eval-gsrm:", "train:"))
        ]
        assert phases == ["annotate", "annotate", "train-gsrm", "eval-gsrm", "train"]
        assert "gate: passed on 2 examples" in out
        assert json.loads((out_dir / "report.json").read_text())["steps"] == 2

        assert main(["run", str(job_file), "--output", str(out_dir)]) == 0
        out = capsys.readouterr().out
        uri = "store://gsrm/built"
        assert f"gsrm build: finished before, the GSRM is at {uri}; not built again" in out
        assert "annotate:" not in out and "train-gsrm:" not in out and "eval-gsrm:" not in out
        assert len(stub.requests) == 8
