"""`rlkd annotate` against a real OpenAI-compatible HTTP server on 127.0.0.1 (tests/openai_stub.py)
that answers each teacher path as scripted: well-formed, malformed until reminded, malformed
for good, cut at the budget, rate-limited once, down. What lands in the store is checked record
by record; a run killed (SIGKILL) or stopped (SIGTERM) mid-way and run again loses nothing and
duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from rlkd.build.annotate import path_id, teacher_paths
from rlkd.build.records import REJECTED_PREFIX, read_records
from rlkd.cli import main
from rlkd.gsrm.prompts import decompose_messages
from rlkd.gsrm.steps import format_steps, parse_steps, thinking
from rlkd.gsrm.types import DecomposeRequest, Step
from rlkd.spec.progress import ANNOTATE_KEY, ANNOTATIONS_PREFIX, GSRM_BUILD_PREFIX, AnnotateSummary
from rlkd.spec.runtime import ANNOTATOR_KEY_ENV
from rlkd.spec.validate import parse_job
from rlkd.store.base import SubStore
from rlkd.store.job import local_stores
from tests.openai_stub import OpenAIStub, StubReply

KEY = "sk-test-3f9c1e77a1b2"
STEPS = [Step("Name the unknown.", "What is x?", "5"), Step("Use it.", "What is 2x?", "10")]
GOOD = "Here is the decomposition.\n\n" + format_steps(STEPS)
PARTIAL = "[Meta-reasoning 1]: Name the unknown.\n[Sub-problem 1]: What is x?"
REMINDED = "Write the whole decomposition again"


def reasoning(problem: str) -> str:
    return f"<think>Reasoning about {problem}: x is 5, so 2x is 10.</think>"


def job_document(url: str, rows: int) -> dict:
    return {
        "apiVersion": "rlkd.ai/v1alpha1",
        "kind": "RLKDJob",
        "metadata": {"name": "gsrm", "namespace": "lab"},
        "spec": {
            "student": {"model": "store://models/student"},
            "dataset": {"uri": "store://datasets/paths.jsonl", "limit": rows},
            "gsrm": {
                "model": "store://models/built-gsrm",
                "build": {
                    "baseModel": "store://models/instruct",
                    "annotator": {
                        "backend": "openai",
                        "url": url,
                        "model": "annotator-llm",
                        "request": {"maxTokens": 60, "maxRetries": 1, "maxConcurrency": 4},
                    },
                },
            },
            "judge": {"backend": "rule"},
        },
    }


def setup(tmp_path: Path, url: str, problems: list[str]) -> tuple[Path, Path, SubStore]:
    """The job file, the local store's root, and the GSRM build's store."""
    job_file = tmp_path / "job.yaml"
    document = job_document(url, len(problems))
    job_file.write_text(yaml.safe_dump(document))
    root = tmp_path / "store"
    stores = local_stores(parse_job(document), root)
    rows = [{"problem": p, "answer": "10", "teacher_reasoning": reasoning(p)} for p in problems]
    stores.shared.put_bytes(
        "datasets/paths.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode()
    )
    return job_file, root, SubStore(stores.run, GSRM_BUILD_PREFIX)


def problem_of(prompt: str) -> str:
    """The path's problem in a decomposition prompt (after the few-shot example's)."""
    return prompt.split("Problem:\n")[-1].split("\n")[0]


def scripted(replies: dict[str, Callable[[str, int], StubReply]]) -> tuple[OpenAIStub, dict]:
    """A stub that answers a path by its problem: replies[problem](prompt, attempt); the
    arrival time of every request, by problem, goes to the dict it returns too."""
    arrivals: dict[str, list[float]] = {}

    def respond(prompt: str) -> StubReply:
        problem = problem_of(prompt)
        times = arrivals.setdefault(problem, [])
        times.append(time.monotonic())
        return replies[problem](prompt, len(times) - 1)

    return OpenAIStub(respond), arrivals


def test_paths_are_accepted_rejected_or_failed_and_a_rerun_does_only_the_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    down = {"now": True}
    replies: dict[str, Callable[[str, int], StubReply]] = {
        "good": lambda p, n: StubReply(GOOD),
        "fixable": lambda p, n: StubReply(GOOD if REMINDED in p else "x is 5 and 2x is 10."),
        "partial": lambda p, n: StubReply(PARTIAL),
        "long": lambda p, n: StubReply(GOOD * 10),  # cut at maxTokens 60
        "limited": lambda p, n: (
            StubReply(status=429, headers={"Retry-After": "1"}, body='{"error": "slow down"}')
            if n == 0
            else StubReply(GOOD)
        ),
        "down": lambda p, n: (
            StubReply(status=500, body=f"upstream error, key {KEY}")
            if down["now"]
            else StubReply(GOOD)
        ),
    }
    stub, arrivals = scripted(replies)
    monkeypatch.setenv(ANNOTATOR_KEY_ENV, KEY)
    with stub:
        job_file, root, store = setup(tmp_path, stub.url, list(replies))
        assert main(["annotate", str(job_file), "--store-dir", str(root)]) == 1
        first = capsys.readouterr()

        # Accepted: the serving prompt (never the reminder) and the canonical decomposition.
        accepted = {
            r["problem"]: r for r in _with_problems(read_records(store, ANNOTATIONS_PREFIX))
        }
        assert sorted(accepted) == ["fixable", "good", "limited"]
        for problem, record in accepted.items():
            request = DecomposeRequest(thinking(reasoning(problem)), problem)
            assert record["id"] == path_id(request)
            assert record["prompt"] == decompose_messages(request)
            assert record["completion"] == [{"role": "assistant", "content": format_steps(STEPS)}]
            assert (record["domain"], record["steps"]) == ("math", 2)
            assert parse_steps(record["completion"][0]["content"]) == STEPS

        # The malformed reply was answered in the same conversation, with the reminder.
        fixable = [r for r in stub.requests if problem_of(r["messages"][1]["content"]) == "fixable"]
        assert [len(r["messages"]) for r in fixable] == [2, 4]
        assert fixable[1]["messages"][2] == {"role": "assistant", "content": "x is 5 and 2x is 10."}
        assert fixable[1]["messages"][3]["content"].startswith("Your reply has no steps")

        rejected = {r["problem"]: r for r in read_records(store, REJECTED_PREFIX)}
        assert {p: r["reason"] for p, r in rejected.items()} == {
            "partial": "missing_parts",
            "long": "token_limit",
        }
        assert rejected["partial"]["reply"] == PARTIAL
        assert len(arrivals["partial"]) == 2 and len(arrivals["long"]) == 1  # a cut reply: once

        # The 429's Retry-After (1 s) was waited for: the backoff alone waits under 0.75 s.
        assert arrivals["limited"][1] - arrivals["limited"][0] >= 1.0
        assert len(arrivals["down"]) == 2  # the backend's one retry

        summary = AnnotateSummary.model_validate(store.get_json(ANNOTATE_KEY), by_name=False)
        assert summary == AnnotateSummary(
            finished=True,
            paths=6,
            accepted=3,
            rejected=2,
            reminded=2,
            rejections={"missing_parts": 1, "token_limit": 1},
            failures={"server_error": 1},
        )
        assert first.out.splitlines()[-1] == (
            "annotate: 6 paths: accepted 3, rejected 2, failed 1, done before 0; rejected: "
            "missing_parts 1, token_limit 1; failed: server_error 1"
        )

        # The key went in every request's header, and nowhere a person or the store can read.
        assert stub.authorizations == [f"Bearer {KEY}"] * len(stub.requests)
        assert all(KEY not in json.dumps(body) for body in stub.requests)
        assert KEY not in first.out + first.err and "***" in first.out
        assert all(KEY not in p.read_text() for p in root.rglob("*") if p.is_file())

        # The rerun asks only for the path that failed.
        down["now"] = False
        stub.reset_counts()
        assert main(["annotate", str(job_file), "--store-dir", str(root)]) == 0
        assert [problem_of(r["messages"][1]["content"]) for r in stub.requests] == ["down"]
    again = AnnotateSummary.model_validate(store.get_json(ANNOTATE_KEY), by_name=False)
    assert (again.skipped, again.accepted, again.failures, again.complete) == (5, 1, {}, True)
    assert len(read_records(store, ANNOTATIONS_PREFIX)) == 4
    assert capsys.readouterr().out.splitlines()[-1] == (
        "annotate: 6 paths: accepted 1, rejected 0, failed 0, done before 5"
    )


def _with_problems(records: list[dict]) -> list[dict]:
    return [{**r, "problem": problem_of(r["prompt"][1]["content"])} for r in records]


def test_the_limit_and_duplicate_rows_select_the_paths(tmp_path: Path) -> None:
    job_file, root, _ = setup(tmp_path, "http://127.0.0.1:1/v1", ["a", "b", "a", "c", "d"])
    document = yaml.safe_load(job_file.read_text())
    document["spec"]["dataset"].pop("limit")
    document["spec"]["gsrm"]["build"]["limit"] = 3
    job = parse_job(document)
    paths = teacher_paths(job, local_stores(job, root))
    assert len(paths) == 3 and len({p.id for p in paths}) == 3
    assert {p.request.problem for p in paths} < {"a", "b", "c", "d"}
    assert all(p.request.reasoning.startswith("Reasoning about") for p in paths)  # thinking only


def test_a_job_without_a_gsrm_build_says_how_to_declare_one(tmp_path: Path, capsys) -> None:
    job_file, root, _ = setup(tmp_path, "http://127.0.0.1:1/v1", ["a"])
    document = yaml.safe_load(job_file.read_text())
    document["spec"]["gsrm"] = {"backend": "rule"}
    job_file.write_text(yaml.safe_dump(document))
    assert main(["annotate", str(job_file), "--store-dir", str(root)]) == 1
    assert "rlkd annotate: spec.gsrm.build: is not set" in capsys.readouterr().err


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_run_stopped_mid_way_resumes_without_loss_or_duplicates(
    tmp_path: Path, stop: signal.Signals
) -> None:
    problems = [f"p{i}" for i in range(8)]
    stub, _ = scripted({p: lambda _p, _n: StubReply(GOOD, delay=0.15) for p in problems})
    with stub:
        job_file, root, store = setup(tmp_path, stub.url, problems)
        command = [sys.executable, "-m", "rlkd.cli", "annotate", str(job_file)]
        command += ["--store-dir", str(root), "--shard-size", "2", "--concurrency", "1"]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
        )
        while not store.exists(f"{ANNOTATIONS_PREFIX}shard-00000.jsonl"):
            assert process.poll() is None, process.communicate()
            time.sleep(0.02)
        while len(stub.requests) < 4:  # one more record waits for its shard
            time.sleep(0.02)
        process.send_signal(stop)
        _, err = process.communicate(timeout=60)
        answered = len(stub.requests)
        kept = stored_lines(store)
        if stop == signal.SIGTERM:
            assert process.returncode == 1 and "stopped (SIGTERM)" in err
            assert len(kept) >= answered - 1  # all but the reply in flight are written
        else:
            assert process.returncode == -signal.SIGKILL
            assert len(kept) >= 2
        assert len(kept) < len(problems)

        stub.reset_counts()
        assert main(["annotate", str(job_file), "--store-dir", str(root)]) == 0
        asked = [problem_of(r["messages"][1]["content"]) for r in stub.requests]
    stored = stored_lines(store)
    assert len(stored) == len(problems)  # every path once: nothing lost, nothing duplicated
    assert sorted(problem_of(r["prompt"][1]["content"]) for r in stored) == problems
    assert len(asked) == len(problems) - len(kept)  # the rerun asked only for the rest
    assert AnnotateSummary.model_validate(store.get_json(ANNOTATE_KEY), by_name=False).complete


def stored_lines(store: SubStore) -> list[dict]:
    """Every accepted record as written, duplicates included."""
    return [
        json.loads(line)
        for key in store.list(ANNOTATIONS_PREFIX)
        for line in store.get_bytes(key).decode().splitlines()
    ]
