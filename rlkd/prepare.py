"""The prepare phase (`rlkd prepare`): the teacher side of the structure reward decomposed and
cached in the job's store before training, for the training rows and the evaluation rows alike,
so the learner's steps wait for no teacher decomposition, and a GSRM that cannot serve shows up
before GPU hours go to the learner.

It writes exactly the entries the learner's `TeacherCache` reads (same store, same keys).
"""

from __future__ import annotations

from rlkd.data import Record, evaluation_records, examples, training_records
from rlkd.gsrm.engine import TeacherCache, precompute_teachers
from rlkd.gsrm.loop import run_sync
from rlkd.gsrm.types import Decomposer, DecomposeRequest
from rlkd.spec.resource import RLKDJob
from rlkd.store.job import JobStores


def nothing_to_prepare(job: RLKDJob) -> str | None:
    """Why the job has no teacher decompositions to compute, or None when it has some."""
    spec = job.spec
    if spec.rewards.structure == 0:
        return "rewards.structure is 0"
    if spec.teacher.source == "decompositions":
        return "teacher.source is decompositions: the dataset carries them"
    if spec.teacher.source == "model":
        return "teacher.source is model: the teacher's paths are sampled during training"
    return None


def prepared_records(job: RLKDJob, stores: JobStores) -> list[Record]:
    """Every row whose teacher side the run will need: training, then evaluation."""
    rows = training_records(job.spec, stores)
    if job.spec.evaluation is not None:
        rows += evaluation_records(job.spec, stores, job.spec.evaluation)
    return rows


def prepare_teachers(
    job: RLKDJob, stores: JobStores, decomposer: Decomposer, *, batch_size: int = 64
) -> tuple[int, dict[str, int]]:
    """Decompose and cache the teacher reasoning of every example training and evaluation will
    use; returns (examples, failures by reason). Cached entries are not computed again."""
    requests = [
        DecomposeRequest(e.teacher, e.problem, e.domain)
        for e in examples(prepared_records(job, stores), job.spec)
    ]
    cache = TeacherCache(decomposer, stores.run)
    return len(requests), run_sync(precompute_teachers(cache, requests, batch_size=batch_size))
