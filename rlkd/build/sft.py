"""`rlkd train-gsrm`: the GSRM's supervised fine-tuning, as one recipe read top to bottom.

the annotations (`rlkd annotate`) -> their training split -> TRL SFT of spec.gsrm.build.baseModel
on the annotator's decompositions, the loss on the decomposition only, checkpoints uploaded as it
goes -> save -> upload to spec.gsrm.model -> `stage: finished`. The build keeps its own progress
document and checkpoints below the run's `gsrm-build/` prefix (the learner's machinery on a
sub-store), so a pod that restarts resumes from the newest complete checkpoint, and a finished
build is not done again. The same function runs in a PyTorchJob's pods, one process per GPU.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlkd.build.config import gsrm_build, sft_config
from rlkd.build.records import Record, read_records, split_held_out
from rlkd.errors import RLKDError
from rlkd.models import local_model, publish_model
from rlkd.spec.job import GSRMBuildSpec
from rlkd.spec.progress import ANNOTATIONS_PREFIX, GSRM_BUILD_PREFIX, UNGATED
from rlkd.spec.resource import RLKDJob
from rlkd.store.base import Store, SubStore
from rlkd.store.job import JobStores
from rlkd.train.callbacks import LearnerCallback, StepBar, barrier
from rlkd.train.checkpoints import Uploader, resume_point, tensorboard_upload
from rlkd.train.launch import topology
from rlkd.train.placement import placement
from rlkd.train.progress import ProgressReporter, Say, silent


def train_gsrm(
    job: RLKDJob,
    stores: JobStores,
    *,
    workdir: Path,
    env: Mapping[str, str] = os.environ,
    say: Say = print,
    bars: bool = False,
) -> None:
    """Build (or resume building) the job's GSRM and upload it to spec.gsrm.model. `say` prints
    one line per phase (rank 0 only); `bars` shows a progress bar over the steps."""
    spec = job.spec
    build = gsrm_build(spec)
    target = spec.gsrm.model if spec.gsrm is not None and spec.gsrm.model else ""
    store = SubStore(stores.run, GSRM_BUILD_PREFIX)
    workdir.mkdir(parents=True, exist_ok=True)
    config = sft_config(spec, placement(spec, workdir, env))

    from accelerate import PartialState

    state = PartialState()  # initialised by the config: ranks, devices, the process group
    main = state.is_main_process
    progress = ProgressReporter(store, enabled=main)
    if not main:
        say = silent
    try:
        if progress.doc.stage == "finished" and progress.doc.model:
            say(f"already finished: the GSRM is at {progress.doc.model}")
            return
        records, held_out = split_held_out(read_records(store), build.held_out, build.training.seed)
        if not records:
            raise RLKDError(
                f"no annotations in {store.uri_for(ANNOTATIONS_PREFIX.rstrip('/'))}: run "
                "`rlkd annotate` first (it writes the records the GSRM is trained on)"
            )
        with state.main_process_first():
            base = local_model(build.base_model, stores, workdir, field="spec.gsrm.build.baseModel")
        resume = resume_point(store, workdir, state)
        start = f"resuming from {Path(resume).name}" if resume else "starting"
        say(
            f"train-gsrm: SFT of {build.base_model} on {len(records)} decompositions "
            f"({len(held_out)} held out for eval-gsrm), {start}"
        )

        model_dir = _sft(build, store, base, records, config, resume, progress, say, bars)

        if main:
            say(f"uploading the GSRM to {target}")
            uri = publish_model(model_dir, target, stores, field="spec.gsrm.model")
            progress.failed(UNGATED)  # until eval-gsrm's gate passes
            progress.finished(uri)
            say(f"finished: the GSRM is at {uri}; next, its gate: rlkd eval-gsrm")
    except BaseException as error:
        if main and isinstance(error, (RLKDError, OSError)):
            progress.failed(f"{type(error).__name__}: {error}")
        raise
    finally:
        progress.close()


def sft_rows(records: Sequence[Record]) -> list[dict[str, Any]]:
    """The training records as TRL's conversational prompt-completion rows (the columns SFT
    reads; `id`, `domain` and `steps` stay in the store)."""
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in records]


def _sft(
    build: GSRMBuildSpec,
    store: Store,
    base: str,
    records: list[Record],
    config: Any,
    resume: str | None,
    progress: ProgressReporter,
    say: Say,
    bars: bool,
) -> Path:
    """SFT with TRL, checkpoints uploaded and progress reported; returns the local folder of
    the fine-tuned model."""
    from accelerate import PartialState

    state = PartialState()
    topo = topology(os.environ)
    uploader = None
    if state.is_local_main_process:
        uploader = Uploader(
            store,
            node_rank=topo.node_rank,
            nodes=topo.nnodes,
            keep=build.training.save_total_limit,
            extra=tensorboard_upload(store) if state.is_main_process else None,
        )
        if state.is_main_process:
            uploader.on_complete = progress.checkpoint
    callback = LearnerCallback(
        progress,
        structure=None,
        max_failure_fraction=1.0,
        uploader=uploader,
        step_activity="updating",
    )
    trainer = sft_trainer(base, records, config, callbacks=[callback], say=say, bars=bars)
    progress.stage("training")
    trainer.train(resume_from_checkpoint=resume)
    progress.activity("saving")
    return save_trained(trainer, config)


def sft_trainer(
    base: str,
    records: Sequence[Record],
    config: Any,
    *,
    callbacks: Sequence[Any] = (),
    say: Say = print,
    bars: bool = False,
) -> Any:
    """TRL's SFTTrainer of `base` (a local folder or hub id) on prompt-completion `records`
    under `config` (an SFTConfig, `rlkd.build.config.sft_config`), saying how many records were
    left out for length; `bars` shows a step bar on the main process instead of log lines. The
    GSRM build trains with it, and so do the tests' tiny GSRM and judge."""
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoTokenizer, PrinterCallback
    from trl import SFTTrainer

    callbacks = list(callbacks)
    if bars and PartialState().is_main_process:
        callbacks.append(StepBar())
    trainer = SFTTrainer(
        model=base,
        args=config,
        train_dataset=Dataset.from_list(sft_rows(records)),
        processing_class=AutoTokenizer.from_pretrained(base),
        callbacks=callbacks,
    )
    if dropped := len(records) - len(trainer.train_dataset):  # type: ignore[arg-type]
        say(
            f"left out {dropped} of {len(records)} records whose prompt alone reaches "
            "spec.gsrm.build.training.maxLength (no decomposition token left to learn)"
        )
    if bars:
        trainer.remove_callback(PrinterCallback)  # the step bar shows the loss instead
    return trainer


def save_trained(trainer: Any, config: Any) -> Path:
    """Save the trained model and its tokenizer to `model/` beside `config.output_dir` (every
    rank takes part: ZeRO-3 gathers the shards); returns that folder."""
    from accelerate import PartialState

    model_dir = Path(config.output_dir).parent / "model"
    trainer.save_model(str(model_dir))
    if PartialState().is_main_process:
        trainer.processing_class.save_pretrained(str(model_dir))
    barrier()
    return model_dir
