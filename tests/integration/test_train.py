"""`rlkd train` on the CPU, started as the PyTorchJob starts it: the ConfigMap's files, the
container's environment, and the Training Operator's PET_* variables, against the real S3
server; a learner killed mid-run resumes from its newest complete checkpoint; a run whose
structure rewards fail stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rlkd.cli import main
from rlkd.k8s.children import build_children
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.spec.progress import COMPLETE_MARKER, EVALUATION_KEY, PROGRESS_KEY
from rlkd.spec.validate import parse_job
from rlkd.spec.yamlio import dump_all
from rlkd.store import LocalStore, S3Config, S3Store, Store
from rlkd.train.checkpoints import newest_complete
from tests.learner import job_document, with_spec, write_rows
from tests.s3server import S3Server

# DeepSpeed compiles a communication extension on first use: keep it across runs.
EXTENSIONS = Path(__file__).resolve().parents[2] / ".cache" / "torch-extensions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rlkd(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "rlkd.cli", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_EXTENSIONS_DIR": str(EXTENSIONS), **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def upload_folder(store: Store, folder: Path, prefix: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            store.put_file(prefix + path.relative_to(folder).as_posix(), path)


@pytest.mark.s3
def test_two_learner_pods_train_with_zero2_and_leave_everything_in_s3(
    tmp_path: Path, s3_server: S3Server, s3_config: S3Config, tiny_model: Path
) -> None:
    shared = S3Store(S3Config(**{**vars(s3_config), "prefix": "rlkd"}))
    upload_folder(shared, tiny_model, "models/tiny/")
    shared.put_file("datasets/sums.jsonl", write_rows(tmp_path / "sums.jsonl"))
    document = with_spec(
        job_document("zero2", "store://models/tiny", "store://datasets/sums.jsonl"),
        learner={"replicas": 2, "deepspeed": {"stage": 2}},
        storage={"endpoint": s3_server.endpoint, "bucket": s3_config.bucket, "prefix": "rlkd"},
    )
    children = build_children(
        parse_job(document), OperatorDefaults(vllm_image="v", trainer_image="t")
    )
    spec = children.learner["spec"]
    master = spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert master["command"] == ["rlkd", "train"]
    nodes = (
        spec["pytorchReplicaSpecs"]["Master"]["replicas"]
        + (spec["pytorchReplicaSpecs"]["Worker"]["replicas"])
    )
    per_node = int(spec["nprocPerNode"])
    # The ConfigMap, mounted where the pod would have it (one folder stands for /etc/rlkd).
    config = tmp_path / "etc-rlkd"
    config.mkdir()
    for key, text in children.config["data"].items():
        (config / key).write_text(text)
    container_env = {e["name"]: e["value"].replace("/etc/rlkd", str(config)) for e in master["env"]}
    port = free_port()
    pods = []
    for rank in range(nodes):
        (tmp_path / f"pod-{rank}").mkdir()
        operator_env = {  # what the Training Operator v1.9 adds (envvar.go)
            "PET_NNODES": str(nodes),
            "PET_NPROC_PER_NODE": str(per_node),
            "PET_NODE_RANK": str(rank),
            "PET_MASTER_ADDR": "127.0.0.1",
            "PET_MASTER_PORT": str(port),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(nodes * per_node),
            "RANK": str(rank),
        }
        keys = {
            "AWS_ACCESS_KEY_ID": s3_server.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.credentials.secret_key,
        }
        pod_env = {**container_env, **operator_env, **keys, "TMPDIR": str(tmp_path / f"pod-{rank}")}
        pods.append(rlkd(["train"], pod_env, tmp_path / f"pod-{rank}.log"))
    for rank, pod in enumerate(pods):
        assert pod.wait(timeout=900) == 0, (tmp_path / f"pod-{rank}.log").read_text()[-3000:]

    run = S3Store(S3Config(**{**vars(s3_config), "prefix": "rlkd/lab/zero2"}))
    progress = run.get_json(PROGRESS_KEY)
    assert (progress["stage"], progress["step"]) == ("finished", 4)
    assert set(progress["evaluations"]) == {"before", "after"}
    assert set(run.get_json(EVALUATION_KEY)) == {"before", "after"}
    assert run.exists("model/config.json")
    checkpoint = newest_complete(run)
    assert checkpoint is not None and checkpoint.step == 4
    keys = run.list(f"checkpoints/{checkpoint.name}/")
    assert {k.rsplit("/", 1)[1] for k in keys if "/.parts/" in k} == {"node-0", "node-1"}
    shards = {k.rsplit("/", 1)[1] for k in keys if "optim_states" in k}
    assert shards == {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(2)}
    assert progress["checkpoint"] == run.uri_for(f"checkpoints/{checkpoint.name}")


def test_a_killed_learner_resumes_from_its_newest_complete_checkpoint(
    tmp_path: Path, tiny_model: Path
) -> None:
    document = job_document(
        "resumed", str(tiny_model), str(write_rows(tmp_path / "sums.jsonl")), maxSteps=12
    )
    job = tmp_path / "job.yaml"
    job.write_text(dump_all([document]))
    store_dir, run = tmp_path / "store", LocalStore(tmp_path / "store" / "lab" / "resumed")
    args = ["train", "--job", str(job), "--store-dir", str(store_dir)]
    args += ["--workdir", str(tmp_path / "work")]
    learner = rlkd(args, {}, tmp_path / "first.log")
    deadline = time.monotonic() + 600
    while newest_complete(run) is None and learner.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.1)
    assert learner.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
    learner.send_signal(signal.SIGKILL)
    learner.wait()
    killed_at = newest_complete(run)
    assert killed_at is not None and run.get_json(PROGRESS_KEY)["stage"] != "finished"

    again = rlkd(args, {}, tmp_path / "second.log")
    assert again.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert f"resuming from checkpoint-{killed_at.step}" in log
    assert "evaluate before" not in log  # done before the kill, not repeated
    progress = run.get_json(PROGRESS_KEY)
    assert (progress["stage"], progress["step"], progress["totalSteps"]) == ("finished", 12, 12)
    assert run.exists(f"checkpoints/checkpoint-12/{COMPLETE_MARKER}")


def test_a_learner_that_fails_while_it_sets_up_says_why_in_its_progress_document(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """The operator quotes the progress document's failure in the job's status: a learner that
    cannot even start (here: the operator-served GSRM's URL missing) writes one too."""
    monkeypatch.delenv("RLKD_GSRM_URL", raising=False)
    document = with_spec(
        job_document("no-url", str(tiny_model), str(write_rows(tmp_path / "sums.jsonl"))),
        gsrm={"backend": "vllm", "model": "gsrm"},
    )
    job = tmp_path / "job.yaml"
    job.write_text(dump_all([document]))
    args = ["train", "--job", str(job), "--store-dir", str(tmp_path / "store")]
    assert main([*args, "--workdir", str(tmp_path / "work")]) == 1
    err = capsys.readouterr().err
    progress = LocalStore(tmp_path / "store" / "lab" / "no-url").get_json(PROGRESS_KEY)
    assert progress["failure"].startswith("BackendError: RLKD_GSRM_URL is not set")
    assert progress["failure"].removeprefix("BackendError: ") in err


def test_structure_rewards_that_mostly_fail_stop_the_run(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens: every request fails
    unreachable: dict[str, Any] = {
        "backend": "openai",
        "model": "gsrm",
        "url": closed,
        "request": {"maxRetries": 0, "timeoutSeconds": 5},
    }
    document = with_spec(
        job_document("no-gsrm", str(tiny_model), str(write_rows(tmp_path / "sums.jsonl"))),
        gsrm=unreachable,
        evaluation={"baseline": False},
    )
    job = tmp_path / "job.yaml"
    job.write_text(dump_all([document]))
    args = ["train", "--job", str(job), "--store-dir", str(tmp_path / "store")]
    assert main([*args, "--workdir", str(tmp_path / "work")]) == 1
    err = capsys.readouterr().err
    assert "step 1: 4 of 4 structure rewards failed (connection 4)" in err
    progress = LocalStore(tmp_path / "store" / "lab" / "no-gsrm").get_json(PROGRESS_KEY)
    assert "maxStructureFailureFraction" in progress["failure"]
    assert progress["stage"] == "training"
