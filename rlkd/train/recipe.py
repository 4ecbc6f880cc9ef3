"""`rlkd train`: the learner, as one recipe read top to bottom.

prepare (the teacher side, once) -> evaluate the student (spec.evaluation.baseline) -> GRPO with
the recipe's rewards, checkpoints uploaded as it goes -> save the final model -> evaluate it ->
`stage: finished`. Every stage's results are in the store before the next begins, so a pod that
restarts resumes where its run stopped: from the newest complete checkpoint, skipping the stages
the progress document says are done. The same function runs in a PyTorchJob's pods and inside
`rlkd run`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlkd.data import evaluation_records, training_records
from rlkd.errors import RLKDError
from rlkd.eval import Evaluation, evaluate, save_evaluation
from rlkd.gsrm.backends import LocalModel
from rlkd.job_rewards import Rewards, build_rewards, build_structure_engine
from rlkd.models import local_model, model_loader
from rlkd.prepare import already_prepared, prepare, with_teacher_paths
from rlkd.spec.progress import MODEL_PREFIX, EvaluationName
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import endpoint_env
from rlkd.store.job import JobStores
from rlkd.store.models import upload_model
from rlkd.train.callbacks import (
    LearnerCallback,
    StepBar,
    barrier,
    report_weight_sync,
    scoring,
)
from rlkd.train.checkpoints import Uploader, resume_point, tensorboard_upload
from rlkd.train.config import Placement, grpo_config
from rlkd.train.data import chat_token_counter, prompt_rows
from rlkd.train.launch import topology
from rlkd.train.placement import placement
from rlkd.train.progress import ProgressReporter, Say, silent
from rlkd.train.timeouts import arm_http_timeout

log = logging.getLogger(__name__)
EVAL_BATCH = 32


def train(
    job: RLKDJob,
    stores: JobStores,
    *,
    workdir: Path,
    env: Mapping[str, str] = os.environ,
    say: Say = print,
    bars: bool = False,
) -> str:
    """Run (or resume) the job's learner; returns the final model's store URI. `say` prints the
    one line per phase (rank 0 only); `bars` shows progress bars for long work."""
    spec = job.spec
    workdir.mkdir(parents=True, exist_ok=True)
    # The global rank as torchrun (or a one-process pod) sets it, known before the process group:
    # a learner that fails while it sets up says why in its progress document too.
    main = env.get("RANK", "0") == "0"
    progress = ProgressReporter(stores.run, enabled=main)
    if not main:
        say = silent
    if progress.doc.stage == "finished" and progress.doc.model:
        say(f"already finished: the model is at {progress.doc.model}")
        progress.close()
        return progress.doc.model
    rewards = None
    try:
        local = model_loader(stores, workdir)  # a transformers GSRM, judge or teacher in the store
        rewards = build_rewards(spec, stores.run, env, local=local)
        config = grpo_config(spec, _placement(job, workdir, env), reward_weights=rewards.weights)

        from accelerate import PartialState

        state = PartialState()  # initialised by the config: ranks, devices, the process group
        if main:
            _prepare(job, stores, progress, say, local)
        state.wait_for_everyone()
        with state.main_process_first():
            student = local_model(spec.student.model, stores, workdir, field="spec.student.model")
        resume = resume_point(stores.run, workdir, state)
        if main and spec.evaluation and spec.evaluation.baseline:
            _evaluate_once(
                job, stores, progress, "before", student, spec.student.model, say, bars, local
            )
        state.wait_for_everyone()

        model_dir = _grpo(job, stores, rewards, config, student, resume, progress, say, bars)

        model_uri = stores.run.uri_for(MODEL_PREFIX.rstrip("/"))
        if main:
            say(f"uploading the final model to {model_uri}")
            upload_model(stores.run, model_dir, MODEL_PREFIX)
            if spec.evaluation:
                _evaluate_once(
                    job, stores, progress, "after", str(model_dir), model_uri, say, bars, local
                )
            progress.finished(model_uri)
            say(f"finished: the distilled model is at {model_uri}")
        # The other ranks are done: they need not wait (in a collective, under its timeout) for
        # rank 0's upload and evaluation.
        return model_uri
    except BaseException as error:
        if main and isinstance(error, (RLKDError, OSError)):
            progress.failed(f"{type(error).__name__}: {error}")
        raise
    finally:
        if rewards is not None:
            rewards.close()
        progress.close()


def _placement(job: RLKDJob, workdir: Path, env: Mapping[str, str]) -> Placement:
    spec = job.spec
    rollout_url = env.get(endpoint_env("rollout"))
    if spec.rollout.mode == "server" and not rollout_url:
        raise RLKDError(
            f"{endpoint_env('rollout')} is not set: rollout.mode server generates on the rollout "
            "vLLM server the operator deploys; set it to that server's URL, or use rollout.mode "
            "colocate or transformers"
        )
    return placement(spec, workdir, env, rollout_url=rollout_url)


def _prepare(
    job: RLKDJob, stores: JobStores, progress: ProgressReporter, say: Say, local: LocalModel
) -> None:
    """The teacher side cached before training; skipped when `rlkd prepare` (the operator's
    prepare Job) finished with nothing left to compute, so the learner needs no teacher server
    (the operator scales it to zero)."""
    if already_prepared(job, stores):
        return
    progress.stage("preparing")
    prepare(job, stores, say=say, local=local)


def _grpo(
    job: RLKDJob,
    stores: JobStores,
    rewards: Rewards,
    config: Any,
    student: str,
    resume: str | None,
    progress: ProgressReporter,
    say: Say,
    bars: bool,
) -> Path:
    """GRPO with TRL over the recipe's rewards; returns the local folder of the final model."""
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    spec = job.spec
    state = PartialState()
    tokenizer = AutoTokenizer.from_pretrained(student)
    records = with_teacher_paths(job, stores.run, training_records(spec, stores))
    rows = prompt_rows(spec, records, chat_token_counter(tokenizer))
    if rows.dropped:
        say(f"dropped {rows.dropped} of {len(records)} prompts longer than grpo.maxPromptLength")
    topo = topology(os.environ)
    uploader = None
    if state.is_local_main_process:
        uploader = Uploader(
            stores.run,
            node_rank=topo.node_rank,
            nodes=topo.nnodes,
            keep=spec.grpo.save_total_limit,
            extra=tensorboard_upload(stores.run) if state.is_main_process else None,
        )
        if state.is_main_process:
            uploader.on_complete = progress.checkpoint
    callback = LearnerCallback(
        progress,
        structure=rewards.structure,
        max_failure_fraction=spec.rewards.max_structure_failure_fraction,
        uploader=uploader,
    )
    callbacks: list[Any] = [callback]
    if bars and state.is_main_process:
        callbacks.append(StepBar())
    trainer = GRPOTrainer(
        model=student,
        reward_funcs=scoring(progress, rewards.functions),
        args=config,
        train_dataset=Dataset.from_list(rows.rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    report_weight_sync(trainer, progress)
    client = getattr(getattr(trainer, "vllm_generation", None), "vllm_client", None)
    if client is not None and spec.learner.stall_timeout_seconds:
        arm_http_timeout(client.session, spec.learner.stall_timeout_seconds)
    if bars:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the step bar shows the reward instead
    progress.stage("training")
    start = f"resuming from {Path(resume).name}" if resume else "starting"
    say(f"train: GRPO on {len(rows.rows)} prompts, {start}")
    trainer.train(resume_from_checkpoint=resume)
    model_dir = Path(config.output_dir).parent / "model"
    progress.activity("saving")
    trainer.save_model(str(model_dir))  # every rank: ZeRO-3 gathers the shards
    if state.is_main_process:
        tokenizer.save_pretrained(str(model_dir))
    barrier()
    return model_dir


def _evaluate_once(
    job: RLKDJob,
    stores: JobStores,
    progress: ProgressReporter,
    name: EvaluationName,
    model_dir: str,
    model_ref: str,
    say: Say,
    bars: bool,
    local: LocalModel,
) -> None:
    """One greedy evaluation, skipped when the progress document has it already."""
    spec = job.spec
    if spec.evaluation is None or name in progress.doc.evaluations:
        return
    progress.stage("evaluating", name)
    records = with_teacher_paths(job, stores.run, evaluation_records(spec, stores, spec.evaluation))
    evaluation = run_evaluation(
        job, stores, records, model_dir, model_ref, bars=bars, label=name, local=local
    )
    save_evaluation(stores.run, name, evaluation)
    progress.evaluation(name, evaluation.summary)
    say(f"evaluate {name}: {describe(evaluation)}")


def run_evaluation(
    job: RLKDJob,
    stores: JobStores,
    records: list[dict[str, Any]],
    model_dir: str,
    model_ref: str,
    *,
    bars: bool = False,
    label: str = "evaluate",
    env: Mapping[str, str] = os.environ,
    local: LocalModel | None = None,
) -> Evaluation:
    """Greedy answers of the model in `model_dir`, scored (shared by the learner and `rlkd
    eval`); `local` loads a transformers GSRM or judge kept in the store."""
    from rlkd.gsrm.backends.transformers import TransformersChat

    spec = job.spec
    chat = TransformersChat(model_dir, batch_size=EVAL_BATCH)
    # Alignment is measured whenever the job names a GSRM and a judge, whatever the rewards'
    # weights: an accuracy-only run is compared on the same two numbers.
    measured = spec.gsrm is not None and spec.judge is not None
    engine = build_structure_engine(spec, stores.run, env, local=local) if measured else None

    async def run() -> Evaluation:
        bar = _bar(len(records), label) if bars else None
        try:
            return await evaluate(spec, records, chat, engine=engine, model=model_ref, progress=bar)
        finally:
            if bar is not None:
                bar.close()
            if engine is not None:
                await engine.aclose()

    return asyncio.run(run())


def describe(evaluation: Evaluation) -> str:
    summary = evaluation.summary
    text = f"accuracy {summary.accuracy:.3f}"
    if summary.structure is not None:
        text += f", structure alignment {summary.structure:.3f}"
    text += f" on {summary.examples} problems"
    if summary.errors:
        text += " (" + ", ".join(f"{k} {v}" for k, v in summary.errors.items()) + ")"
    return text


def _bar(total: int, label: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=label, unit="problem", leave=False)
