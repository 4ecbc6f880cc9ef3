"""`rlkd train-gsrm` and `rlkd eval-gsrm` on the CPU with a tiny model: SFT on annotation shards
in the real S3 server and in a local store, the loss masked to the decomposition, the model
published to spec.gsrm.model and loadable, a rerun after the end that does nothing, a killed
build that resumes from its newest complete checkpoint, and the quality gate's failure line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlkd.build.config import sft_config
from rlkd.build.sft import sft_rows
from rlkd.cli import main
from rlkd.spec.progress import (
    COMPLETE_MARKER,
    GSRM_BUILD_PREFIX,
    GSRM_EVALUATION_KEY,
    PROGRESS_KEY,
    UNGATED,
    GSRMEvaluation,
)
from rlkd.spec.validate import parse_job
from rlkd.spec.yamlio import dump_all
from rlkd.store import LocalStore, S3Config, S3Store, Store
from rlkd.store.base import SubStore
from rlkd.toy import arithmetic
from rlkd.train.checkpoints import newest_complete, upload_folder
from rlkd.train.config import Placement
from tests.gsrm_build import annotation, build_job_document, write_annotations
from tests.s3server import S3Server


def load_weights(folder: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.s3
def test_a_gsrm_built_in_s3_is_published_loads_and_is_gated(
    tmp_path: Path,
    s3_server: S3Server,
    s3_config: S3Config,
    tiny_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.credentials.secret_key)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the commands' default working directories
    shared = S3Store(S3Config(**{**vars(s3_config), "prefix": "rlkd"}))
    upload_folder(shared, tiny_model, "models/tiny/")
    build = SubStore(
        S3Store(S3Config(**{**vars(s3_config), "prefix": "rlkd/lab/s3"})), "gsrm-build"
    )
    write_annotations(build, 8)
    document = build_job_document("s3", "store://models/tiny")
    document["spec"]["storage"] = {
        "endpoint": s3_server.endpoint,
        "bucket": s3_config.bucket,
        "prefix": "rlkd",
    }
    job = tmp_path / "job.yaml"
    job.write_text(dump_all([document]))

    assert main(["train-gsrm", str(job)]) == 0
    out = capsys.readouterr().out
    assert "SFT of store://models/tiny on 6 decompositions (2 held out for eval-gsrm)" in out
    progress = build.get_json(PROGRESS_KEY)
    model_uri = shared.uri_for("gsrm/s3")
    assert (progress["stage"], progress["step"], progress["model"]) == ("finished", 4, model_uri)
    assert progress["failure"] == UNGATED  # trained, but no build until its gate passes
    checkpoint = newest_complete(build)
    assert checkpoint is not None and checkpoint.step == 4
    assert progress["checkpoint"] == build.uri_for(f"checkpoints/{checkpoint.name}")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = tmp_path / "published"
    for key in shared.list("gsrm/s3/"):
        shared.get_file(key, local / key.removeprefix("gsrm/s3/"))
    model = AutoModelForCausalLM.from_pretrained(local)
    tokenizer = AutoTokenizer.from_pretrained(local)
    ids = tokenizer("[Sub-problem 1]:", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=2, do_sample=False).shape[1] == ids.shape[1] + 2

    assert main(["train-gsrm", str(job)]) == 0
    assert f"already finished: the GSRM is at {model_uri}" in capsys.readouterr().out

    # A random model writes no steps within gsrm.request.maxTokens (8): the gate fails, with the
    # report in the store first.
    assert main(["eval-gsrm", str(job)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == (  # above it: transformers' own loading bar
        "rlkd eval-gsrm: the GSRM misses its gate: parse rate 0.000 is below 0.9 "
        "(spec.gsrm.build.gate.minParseRate)"
    )
    assert "gate: FAILED on 2 examples" in out
    report = GSRMEvaluation.model_validate(build.get_json(GSRM_EVALUATION_KEY))
    assert (report.model, report.examples, report.parse_rate) == ("store://gsrm/s3", 2, 0.0)
    assert report.errors == {"token_limit": 2} and not report.passed
    assert [r.agreed_steps for r in report.rows] == [None, None]  # minStepAgreement 0: unasked
    # A build that misses its gate is no finished build: its progress document says why.
    failure = build.get_json(PROGRESS_KEY)["failure"]
    assert failure.startswith("the GSRM misses its gate: parse rate 0.000")


def test_a_killed_build_resumes_from_its_newest_complete_checkpoint(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(dump_all([build_job_document("local", str(tiny_model))]))
    root = tmp_path / "store"
    build: Store = SubStore(LocalStore(root / "lab" / "local"), GSRM_BUILD_PREFIX)
    write_annotations(build, 8)
    args = ["train-gsrm", str(job), "--store-dir", str(root)]
    assert main([*args, "--workdir", str(tmp_path / "first")]) == 0
    published = root / "gsrm" / "local"
    uninterrupted = load_weights(published)

    # As a pod killed after checkpoint 2 leaves it: checkpoint 4 half uploaded (no marker), no
    # model, the progress document at training; a new pod has an empty working directory.
    build.delete(f"checkpoints/checkpoint-4/{COMPLETE_MARKER}")
    progress = build.get_json(PROGRESS_KEY)
    build.put_json(PROGRESS_KEY, {**progress, "stage": "training", "step": 2, "model": None})
    shutil.rmtree(published)
    capsys.readouterr()

    assert main([*args, "--workdir", str(tmp_path / "second")]) == 0
    assert "resuming from checkpoint-2" in capsys.readouterr().out
    assert build.get_json(PROGRESS_KEY)["stage"] == "finished"
    assert build.exists(f"checkpoints/checkpoint-4/{COMPLETE_MARKER}")
    resumed = load_weights(published)
    assert resumed.keys() == uninterrupted.keys()
    assert all((resumed[k] == uninterrupted[k]).all() for k in resumed)  # type: ignore[attr-defined]


def test_the_loss_is_on_the_decomposition_only(tmp_path: Path, tiny_model: Path) -> None:
    """TRL's prompt-completion preparation, with the build's config: every prompt token
    (system, domain example, problem, reasoning, the assistant header) is masked out of the
    labels; the decomposition and its end-of-turn token (where generation stops) are learnt."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    job = parse_job(build_job_document("mask", str(tiny_model)))
    record = annotation(0, arithmetic.problems("train", 1)[0])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    trainer = SFTTrainer(
        model=str(tiny_model),
        args=sft_config(job.spec, Placement(output_dir=str(tmp_path), cuda=False)),
        train_dataset=Dataset.from_list(sft_rows([record])),
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[0]  # type: ignore[index]
    prompt = tokenizer.apply_chat_template(
        record["prompt"], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    n = len(prompt_ids)
    assert row["input_ids"][:n] == prompt_ids
    assert row["labels"][:n] == [-100] * n
    assert row["labels"][n:] == row["input_ids"][n:]
    decomposition = record["completion"][0]["content"]
    assert tokenizer.decode(row["input_ids"][n:]) == decomposition + "<|im_end|>"
    batch = trainer.data_collator([row])
    assert int((batch["labels"][0] == -100).sum()) == n
