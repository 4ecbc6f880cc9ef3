"""`rlkd prepare`: the teachers' decompositions land in the job's store (a local directory and a
real S3 server), where the learner's TeacherCache finds them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from rlkd.cli import main
from rlkd.gsrm.backends.chat import Reply
from rlkd.gsrm.backends.rule import RuleDecomposer
from rlkd.gsrm.engine import CACHE_NAMESPACE, TeacherCache
from rlkd.gsrm.steps import format_steps
from rlkd.gsrm.types import DecomposeRequest, Decomposition, Failure, Step
from rlkd.k8s import OperatorDefaults, build_children
from rlkd.prepare import prepare_teachers, prepared_records
from rlkd.spec.job import StorageSpec
from rlkd.spec.progress import PREPARE_KEY, PrepareSummary
from rlkd.spec.runtime import JOB_FILE_ENV
from rlkd.spec.validate import parse_job
from rlkd.store import Credentials, S3Config, S3Store, Store
from rlkd.store.job import local_stores
from tests.s3server import S3Server

TEACHERS = [format_steps([Step(f"plan {i}", f"what is {i}+{i}?", str(2 * i))]) for i in range(6)]
ROWS = [
    {
        "problem": f"{i % 3}+{i % 3}",
        "answer": str(2 * (i % 3)),
        "teacher_reasoning": TEACHERS[i % 3],
    }
    for i in range(6)
]  # three distinct examples, each twice


def job_document(**spec: object) -> dict:
    return {
        "apiVersion": "rlkd.ai/v1alpha1",
        "kind": "RLKDJob",
        "metadata": {"name": "toy", "namespace": "lab"},
        "spec": {
            "student": {"model": "store://models/student"},
            "dataset": {"uri": "store://datasets/toy.jsonl"},
            "gsrm": {"backend": "rule"},
            "judge": {"backend": "rule"},
            **spec,
        },
    }


def write_job(tmp_path: Path, **spec: object) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job_document(**spec)))
    return path


def put_dataset(store: Store, key: str = "datasets/toy.jsonl") -> None:
    store.put_bytes(key, "".join(json.dumps(row) + "\n" for row in ROWS).encode())


class Counting(RuleDecomposer):
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[int] = []
        self.fail = fail

    async def decompose(self, requests: Sequence[DecomposeRequest]) -> list[Decomposition]:
        self.calls.append(len(requests))
        if self.fail:
            return [Failure(self.fail) for _ in requests]
        return await super().decompose(requests)


def test_prepare_caches_each_teacher_once_in_a_local_store(tmp_path: Path, capsys) -> None:
    root = tmp_path / "store"
    job_file = write_job(tmp_path)
    job = parse_job(job_document())
    stores = local_stores(job, root)
    put_dataset(stores.shared)

    assert main(["prepare", str(job_file), "--store-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "teacher decompositions of 6 examples cached in" in out and "lab/toy" in out
    assert len(stores.run.list(f"cache/{CACHE_NAMESPACE}/")) == 3

    # The learner's cache over the same store decomposes no teacher again.
    counting = Counting()
    steps = TeacherCache(counting, stores.run)
    requests = [DecomposeRequest(r["teacher_reasoning"], r["problem"]) for r in ROWS]
    assert asyncio.run(steps.steps(requests))[0] == [Step("plan 0", "what is 0+0?", "0")]
    assert counting.calls == []
    again = prepare_teachers(job, stores, prepared_records(job, stores), counting)
    assert (again.examples, again.distinct, again.decomposed, again.failures) == (6, 3, 0, {})
    assert counting.calls == []
    summary = PrepareSummary.model_validate(stores.run.get_json(PREPARE_KEY), by_name=False)
    assert summary == PrepareSummary(finished=True, examples=6, decomposed=3)


def test_failed_decompositions_are_counted_and_not_cached(tmp_path: Path) -> None:
    job = parse_job(job_document(dataset={"uri": "store://datasets/toy.jsonl", "limit": 4}))
    stores = local_stores(job, tmp_path)
    put_dataset(stores.shared)
    failing = Counting(fail="timeout")
    done = prepare_teachers(job, stores, prepared_records(job, stores), failing, batch_size=2)
    assert (done.examples, done.decomposed, done.failures) == (4, 0, {"timeout": 4})
    assert stores.run.list("cache/") == []


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"rewards": {"structure": 0}}, "rewards.structure is 0"),
        (
            {"teacher": {"source": "decompositions"}},
            "teacher.source is decompositions: the dataset carries them",
        ),
    ],
)
def test_nothing_to_prepare(tmp_path: Path, capsys, spec: dict, reason: str) -> None:
    assert main(["prepare", str(write_job(tmp_path, **spec)), "--store-dir", str(tmp_path)]) == 0
    assert f"nothing to prepare: {reason}" in capsys.readouterr().out


def test_a_job_without_storage_needs_a_store_dir(tmp_path: Path, capsys) -> None:
    assert main(["prepare", str(write_job(tmp_path))]) == 1
    assert (
        "spec.storage: is empty and RLKD_STORE_ENDPOINT is not set: name a store in spec.storage, "
        "or use a local one (--store-dir DIR)" in (capsys.readouterr().err)
    )


@pytest.mark.s3
def test_prepare_against_the_jobs_s3_store(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    bucket = f"prepare-{uuid.uuid4().hex[:12]}"
    storage = {"endpoint": s3_server.endpoint, "bucket": bucket, "prefix": "team"}
    credentials: Credentials = s3_server.credentials
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_key)
    shared = S3Store(
        S3Config(endpoint=s3_server.endpoint, bucket=bucket, prefix="team", credentials=credentials)
    )
    put_dataset(shared)

    assert main(["prepare", str(write_job(tmp_path, storage=storage))]) == 0
    assert f"s3://{bucket}/team/lab/toy" in capsys.readouterr().out
    assert len(shared.list(f"lab/toy/cache/{CACHE_NAMESPACE}/")) == 3


class ScriptedTeacher:
    """A teacher ChatModel that answers from a script (a test double for the sampling logic; the
    transports themselves are tested against a real vLLM server in tests/e2e)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.temperatures: list[float] = []

    async def chat(self, conversations, max_tokens, *, temperature=0.0):
        replies = []
        for conversation in conversations:
            problem = conversation[-1]["content"]
            self.asked.append(problem)
            self.temperatures.append(temperature)
            a = int(problem.split("+")[0])
            if a == 2:
                replies.append(Failure("timeout"))
                continue
            answer = 2 * a if a == 0 else 99  # only problem 0+0 is solved correctly
            reasoning = format_steps([Step(f"double {a}", f"{a}+{a}", str(answer))])
            text = f"<think>\n{reasoning}\n</think>\n<answer>\n\\boxed{{{answer}}}\n</answer>"
            replies.append(Reply(text))
        return replies


def test_a_teacher_model_samples_each_path_once_and_only_correct_paths_are_used(
    tmp_path: Path,
) -> None:
    from rlkd.prepare import sample_teacher_paths, with_teacher_paths

    teacher = {"source": "model", "temperature": 0.8, "model": {"model": "org/teacher"}}
    job = parse_job(job_document(teacher=teacher))
    stores = local_stores(job, tmp_path)
    put_dataset(stores.shared)
    script = ScriptedTeacher()
    counts = sample_teacher_paths(job, stores, prepared_records(job, stores), script)
    # three distinct problems: 0+0 correct, 1+1 wrong (rejected), 2+2 timed out (not cached)
    assert counts == {"failed_timeout": 1, "kept": 1, "rejected": 1, "sampled": 2}
    assert sorted(script.asked) == ["0+0", "1+1", "2+2"] and set(script.temperatures) == {0.8}
    again = sample_teacher_paths(job, stores, prepared_records(job, stores), script)
    # only the failure is asked again; the cached paths still count as kept or rejected
    assert again == {"cached": 2, "failed_timeout": 1, "kept": 1, "rejected": 1}
    rows = with_teacher_paths(job, stores.run, ROWS)
    assert [r["problem"] for r in rows] == ["0+0", "0+0"]
    assert "double 0" in rows[0]["teacher_reasoning"]
    assert "<think>" not in rows[0]["teacher_reasoning"]  # the thinking only


@pytest.mark.s3
def test_prepare_runs_from_the_pods_environment_alone(
    tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The prepare Job's contract: no FILE argument; the job from RLKD_JOB_FILE (the ConfigMap's
    job.yaml, here without spec.storage, so the store can only come from the environment), the
    store from the RLKD_STORE_* values the builder sets, the keys as the pod gets them."""
    bucket = f"prepare-{uuid.uuid4().hex[:12]}"
    storage = StorageSpec(endpoint=s3_server.endpoint, bucket=bucket, prefix="team")
    defaults = OperatorDefaults(vllm_image="v", trainer_image="t", storage=storage)
    children = build_children(parse_job(job_document()), defaults)
    assert children.prepare is not None
    document = yaml.safe_load(children.config["data"]["job.yaml"])
    del document["spec"]["storage"]
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(document))
    for variable in children.prepare["spec"]["template"]["spec"]["containers"][0]["env"]:
        monkeypatch.setenv(variable["name"], variable["value"])
    monkeypatch.setenv(JOB_FILE_ENV, str(job_file))  # the ConfigMap is mounted at /etc/rlkd
    credentials: Credentials = s3_server.credentials
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_key)
    config = {"endpoint": s3_server.endpoint, "bucket": bucket, "credentials": credentials}
    put_dataset(S3Store(S3Config(prefix="team", **config)))

    assert main(["prepare"]) == 0
    assert f"s3://{bucket}/team/lab/toy" in capsys.readouterr().out
    run = S3Store(S3Config(prefix="team/lab/toy", **config))
    assert len(run.list(f"cache/{CACHE_NAMESPACE}/")) == 3
    summary = PrepareSummary.model_validate(run.get_json(PREPARE_KEY), by_name=False)
    assert summary == PrepareSummary(finished=True, examples=6, decomposed=3)
    assert summary.complete  # the learner will not prepare again


def test_the_learner_skips_only_a_prepare_that_finished_without_failures(tmp_path: Path) -> None:
    from rlkd.prepare import already_prepared, prepare

    job = parse_job(job_document())
    stores = local_stores(job, tmp_path)
    put_dataset(stores.shared)
    assert not already_prepared(job, stores)
    stores.run.put_json(PREPARE_KEY, PrepareSummary(finished=True, failures={"x": 1}).to_dict())
    assert not already_prepared(job, stores)  # the failures are tried again
    stores.run.put_json(PREPARE_KEY, PrepareSummary(finished=False).to_dict())
    assert not already_prepared(job, stores)  # it stopped half-way
    assert prepare(job, stores, say=lambda _: None).complete
    assert already_prepared(job, stores)
    decompositions = parse_job(job_document(teacher={"source": "decompositions"}))
    assert already_prepared(decompositions, local_stores(decompositions, tmp_path / "other"))
