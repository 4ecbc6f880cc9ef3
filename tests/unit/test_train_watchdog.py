"""`rlkd run`'s watchdog and the learner's own timeouts: the same rules as the operator's, on
this process's clock; a hang becomes an error."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from rlkd.spec.job import LearnerSpec
from rlkd.spec.progress import PROGRESS_KEY, ProgressDocument
from rlkd.store.local import LocalStore
from rlkd.train.timeouts import arm_http_timeout
from rlkd.train.watchdog import SIGNAL, StallError, Watch, stall_watchdog

LEARNER = LearnerSpec(stall_timeout_seconds=60, startup_timeout_seconds=300)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def doc(step: int, stage: str = "training") -> ProgressDocument:
    return ProgressDocument.model_validate({"step": step, "stage": stage}, by_name=True)


def test_the_watch_gives_the_startup_budget_then_the_step_budget() -> None:
    clock = Clock()
    watch = Watch(LEARNER, clock)
    assert watch.look(None) is None
    clock.now = 299
    assert watch.look(None) is None  # loading: under the 300 s startup budget
    clock.now = 301
    message = watch.look(None)
    assert message is not None and "spec.learner.startupTimeoutSeconds is 300" in message

    watch = Watch(LEARNER, clock)
    watch.look(doc(1))
    clock.now += 10
    assert watch.look(doc(2)) is None  # moved: the 60 s step budget from here
    clock.now += 59
    assert watch.look(doc(2)) is None
    clock.now += 2
    message = watch.look(doc(2))
    assert message is not None
    assert message.startswith("no progress for 1m01s at training step 2, activity starting")
    assert message.endswith("(spec.learner.stallTimeoutSeconds is 60)")


def test_a_stage_without_steps_is_on_the_startup_budget() -> None:
    clock = Clock()
    watch = Watch(LEARNER, clock)
    watch.look(doc(0, "preparing"))
    clock.now += 5
    watch.look(doc(0, "evaluating"))
    clock.now += 200  # an evaluation longer than a step's budget
    assert watch.look(doc(0, "evaluating")) is None


def test_the_watchdog_interrupts_a_blocked_main_thread(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_json(PROGRESS_KEY, doc(1).to_dict())
    learner = LearnerSpec(stall_timeout_seconds=1, startup_timeout_seconds=1)
    blocked = threading.Event()
    with (
        pytest.raises(StallError, match="startupTimeoutSeconds is 1"),
        stall_watchdog(store, learner, poll=0.05),
    ):
        blocked.wait()  # a lock wait that nothing will ever release
    assert signal.getsignal(SIGNAL) == signal.SIG_DFL  # the previous handler is back


def test_a_run_that_moves_is_left_alone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    learner = LearnerSpec(stall_timeout_seconds=1, startup_timeout_seconds=1)
    with stall_watchdog(store, learner, poll=0.05):
        for step in range(12):  # a step every 0.25 s for 3 s, under the 1 s budget
            store.put_json(PROGRESS_KEY, doc(step).to_dict())
            time.sleep(0.25)


def test_the_rollout_client_session_times_out_instead_of_waiting_forever() -> None:
    """A server that accepts connections and never answers (its listen backlog takes them)."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        port = server.getsockname()[1]
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(max_retries=0))
        arm_http_timeout(session, 0.5)
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.post(f"http://127.0.0.1:{port}/generate/", json={})


def test_reward_functions_say_scoring_and_keep_their_names_and_kinds(tmp_path: Path) -> None:
    from trl.trainer.utils import is_async_callable

    from rlkd.rewards import reward_functions
    from rlkd.spec.job import RLKDJobSpec
    from rlkd.train.callbacks import scoring
    from rlkd.train.progress import ProgressReporter

    spec = RLKDJobSpec.model_validate(
        {"student": {"model": "/m"}, "dataset": {"uri": "/d.jsonl"}, "rewards": {"structure": 0}},
        by_name=False,
    )
    functions, _ = reward_functions(spec, structure=None)
    progress = ProgressReporter(LocalStore(tmp_path), enabled=False)
    wrapped = scoring(progress, functions)
    assert [f.__name__ for f in wrapped] == [f.__name__ for f in functions]
    assert [is_async_callable(f) for f in wrapped] == [is_async_callable(f) for f in functions]
    wrapped[0](prompts=["p"], completions=["<answer>\\boxed{2}</answer>"], answer=["2"])
    assert progress.doc.heartbeat.activity == "scoring"

    async def slow(**_: object) -> list[float]:
        return [1.0]

    [async_wrapped] = scoring(progress, [slow])
    assert is_async_callable(async_wrapped) and async_wrapped.__name__ == "slow"


def test_a_weight_sync_is_reported_while_it_runs(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from rlkd.train.callbacks import report_weight_sync
    from rlkd.train.progress import ProgressReporter

    progress = ProgressReporter(LocalStore(tmp_path), enabled=False)
    seen = []
    trainer = SimpleNamespace(
        vllm_generation=SimpleNamespace(
            sync_weights=lambda: seen.append(progress.doc.heartbeat.activity)
        )
    )
    report_weight_sync(trainer, progress)
    trainer.vllm_generation.sync_weights()
    assert seen == ["syncing"] and progress.doc.heartbeat.activity == "generating"
    report_weight_sync(SimpleNamespace(), progress)  # no vLLM rollouts: nothing to wrap
