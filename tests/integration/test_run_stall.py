"""`rlkd run`'s stall watchdog end to end: the GSRM server stops answering mid-training (its
requests hang, the reward function blocks on them), the watchdog stops the run with one clear
line, and the same command, once the server answers again, resumes from the newest checkpoint.
The GSRM is the local OpenAI-compatible stub (no model hub here); the learner is the real one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from rlkd.spec.progress import PROGRESS_KEY, ProgressDocument
from rlkd.spec.yamlio import dump_all
from rlkd.store.local import LocalStore
from tests.learner import job_document, with_spec, write_rows
from tests.openai_stub import OpenAIStub, StubReply

DECOMPOSITION = "[Meta-reasoning 1]: add\n[Sub-problem 1]: the sum\n[Answer 1]: 5"


class GSRM:
    """Answers with a decomposition until `hang` is set; then every request waits an hour."""

    def __init__(self) -> None:
        self.hang = threading.Event()

    def __call__(self, prompt: str) -> StubReply:
        return StubReply(delay=3600) if self.hang.is_set() else StubReply(DECOMPOSITION)


def rlkd_run(job: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rlkd.cli", "run", str(job), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def hang_after_first_checkpoint(out: Path, gsrm: GSRM, done: threading.Event) -> None:
    while not done.is_set():
        if any(out.glob("store/**/checkpoints/*/COMPLETE")):
            gsrm.hang.set()
            return
        time.sleep(0.05)


def test_a_hung_reward_stops_rlkd_run_and_the_rerun_resumes(
    tmp_path: Path, tiny_model: Path
) -> None:
    gsrm = GSRM()
    with OpenAIStub(gsrm) as stub:
        rows = write_rows(tmp_path / "rows.jsonl")
        document = with_spec(
            job_document("stalls", str(tiny_model), str(rows), maxSteps=6, saveSteps=2),
            teacher={"source": "decompositions"},
            dataset={"columns": {"teacherDecomposition": "teacher_reasoning"}},
            gsrm={
                "backend": "openai",
                "model": "org/gsrm",
                "url": stub.url,
                "request": {"timeoutSeconds": 86400, "maxRetries": 0},
            },
            learner={"stallTimeoutSeconds": 8, "startupTimeoutSeconds": 600},
        )
        del document["spec"]["evaluation"]
        job = tmp_path / "job.yaml"
        job.write_text(dump_all([document]))
        out = tmp_path / "out"

        done = threading.Event()
        watcher = threading.Thread(target=hang_after_first_checkpoint, args=(out, gsrm, done))
        watcher.start()
        try:
            first = rlkd_run(job, out)
        finally:
            done.set()
            watcher.join()
        assert gsrm.hang.is_set(), first.stderr
        assert first.returncode == 1, first.stderr
        stalled = [line for line in first.stderr.splitlines() if "stalled" in line]
        assert len(stalled) == 1, first.stderr
        assert stalled[0].startswith("rlkd run: the learner stalled: no progress for ")
        assert "(spec.learner.stallTimeoutSeconds is 8)" in stalled[0]
        assert stalled[0].endswith("run the same command again to resume")
        assert "Traceback" not in first.stderr
        [run] = [p.parent for p in (out / "store").rglob(PROGRESS_KEY)]
        doc = ProgressDocument.model_validate(LocalStore(run).get_json(PROGRESS_KEY), by_name=False)
        assert doc.failure and "StallError" in doc.failure and doc.checkpoint
        hung_at = doc.step
        assert 2 <= hung_at < 6

        gsrm.hang.clear()  # the server answers again
        second = rlkd_run(job, out)
        assert second.returncode == 0, second.stderr
        assert "resuming from checkpoint-" in second.stdout
        doc = ProgressDocument.model_validate(LocalStore(run).get_json(PROGRESS_KEY), by_name=False)
        assert doc.stage == "finished" and doc.step == 6 and doc.model
