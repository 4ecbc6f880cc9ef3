"""The stall watchdog in the operator's pure decision: the clock is the operator's (`now`), the
budgets are the spec's, and a stall is a condition, a Warning, a restart, then a failure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from rlkd.spec.progress import ProgressDocument
from rlkd_operator.decide import Observed, needs_poll
from tests.operator_fixtures import pytorchjob_in
from tests.unit.test_operator_decide import T0, conditions, progress, step, training

LEARNER = {"gpusPerReplica": 0, "stallTimeoutSeconds": 600, "startupTimeoutSeconds": 1800}


def running(**learner: Any) -> tuple[dict, dict]:
    return training(learner={**LEARNER, **learner})


def at(
    body: dict, children: dict, minutes: float, doc: ProgressDocument | None
) -> tuple[dict, Any]:
    observed = Observed(children=children, progress=doc, progress_read=True)
    return step(body, observed, T0 + timedelta(minutes=minutes))


def moving(**learner: Any) -> tuple[dict, dict]:
    """A learner seen at step 3 at minute 0 and step 4 at minute 1: it moves."""
    body, children = running(**learner)
    body, _ = at(body, children, 0, progress(step=3))
    body, _ = at(body, children, 1, progress(step=4))
    return body, children


def test_a_learner_that_moves_is_never_stalled() -> None:
    body, children = running()
    for minute in range(0, 120, 9):  # a step every 9 minutes, under the 10-minute budget
        body, decision = at(body, children, minute, progress(step=minute))
        assert "Stalled" not in conditions(body) and decision.restart is None
    assert body["status"]["watchdog"]["moved"] is True


def test_a_step_that_does_not_move_stalls_and_restarts_the_learner() -> None:
    body, children = moving()
    body, decision = at(body, children, 11, progress(step=4))  # 10 min after minute 1: not yet
    assert decision.restart is None
    doc = progress(step=4, heartbeat={"activity": "syncing", "since": "2026-01-01T10:01:30Z"})
    body, decision = at(body, children, 11.5, doc)
    stalled = conditions(body)["Stalled"]
    assert stalled["status"] == "True" and stalled["reason"] == "Restarted"
    assert stalled["message"].startswith(
        "no progress for 10m30s at training step 4, activity syncing for 10m00s "
        "(spec.learner.stallTimeoutSeconds is 600); restarting the learner"
    )
    assert "(stall restart 1 of 3)" in stalled["message"]
    assert decision.restart == "demo"
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "Stalled")]
    assert body["status"]["watchdog"] == {
        "mark": "training step 4",
        "since": "2026-01-01T10:11:30Z",
        "moved": False,
        "restarts": 1,
    }
    assert body["status"]["phase"] == "Training" and needs_poll(body)


def test_after_a_restart_the_startup_budget_applies_until_the_learner_moves_again() -> None:
    body, children = moving()
    body, _ = at(body, children, 12, progress(step=4))  # restart 1
    body, decision = at(body, children, 12 + 29, progress(step=4))  # loading: 29 < 30 min
    assert decision.restart is None and conditions(body)["Stalled"]["status"] == "True"
    body, decision = at(body, children, 12 + 31, progress(step=3))  # resumed from checkpoint 3
    assert decision.restart is None and decision.events == ()
    recovered = conditions(body)["Stalled"]
    assert recovered["status"] == "False" and recovered["reason"] == "Progressing"
    assert body["status"]["watchdog"]["restarts"] == 1  # the count stays


def test_the_job_fails_with_reason_stalled_after_max_stall_restarts() -> None:
    body, children = moving(maxStallRestarts=2, startupTimeoutSeconds=300)
    restarts = []
    minute = 1.0
    for _ in range(3):
        minute += 11  # over either budget
        body, decision = at(body, children, minute, progress(step=4))
        restarts.append(decision.restart)
    assert restarts == ["demo", "demo", None]
    status = body["status"]
    assert status["phase"] == "Failed"
    failed = conditions(body)["Failed"]
    assert failed["reason"] == "Stalled"
    assert "2 stall restarts done, spec.learner.maxStallRestarts is 2" in failed["message"]
    assert "(spec.learner.startupTimeoutSeconds is 300)" in failed["message"]
    # The hung learner is stopped: its pods go, its GPUs are free.
    assert [p["spec"] for p in decision.patch if p["kind"] == "PyTorchJob"] == [
        {"runPolicy": {"suspend": True}}
    ]
    assert [e.reason for e in decision.events] == ["Stalled", "Failed"]


def test_restart_on_stall_false_only_reports_once() -> None:
    body, children = moving(restartOnStall=False)
    body, decision = at(body, children, 12, progress(step=4))
    assert decision.restart is None and conditions(body)["Stalled"]["reason"] == "Stalled"
    assert "spec.learner.restartOnStall is false" in conditions(body)["Stalled"]["message"]
    assert [e.reason for e in decision.events] == ["Stalled"]
    body, decision = at(body, children, 30, progress(step=4))
    assert decision.events == () and body["status"]["phase"] == "Training"


def test_a_zero_budget_turns_the_watchdog_off() -> None:
    body, children = moving(stallTimeoutSeconds=0)
    body, decision = at(body, children, 60 * 24, progress(step=4))
    assert "Stalled" not in conditions(body) and decision.restart is None


def test_no_progress_document_before_the_first_step_gets_the_startup_budget() -> None:
    body, children = running()
    body, _ = at(body, children, 0, None)
    body, decision = at(body, children, 29, None)  # loading a model: under 30 minutes
    assert decision.restart is None
    body, decision = at(body, children, 31, None)
    message = conditions(body)["Stalled"]["message"]
    assert decision.restart == "demo"
    assert message.startswith("no progress for 31m00s at starting (no progress document yet")
    assert "spec.learner.startupTimeoutSeconds is 1800" in message


def test_a_stage_without_steps_gets_the_startup_budget() -> None:
    body, children = moving()
    evaluating = progress(step=20, stage="evaluating", evaluating="after")
    body, _ = at(body, children, 2, evaluating)
    body, decision = at(body, children, 2 + 25, evaluating)  # a long evaluation is no stall
    assert decision.restart is None


@pytest.mark.parametrize("state", ["Created", "Restarting", "Suspended"])
def test_a_learner_that_is_not_running_runs_no_clock(state: str) -> None:
    body, children = moving()
    children[("PyTorchJob", "demo")] = pytorchjob_in(children[("PyTorchJob", "demo")], state)
    body, decision = at(body, children, 24 * 60, progress(step=4))
    assert decision.restart is None and "Stalled" not in conditions(body)
    assert body["status"]["watchdog"] == {"moved": False, "restarts": 0}


def test_a_suspended_job_is_not_stalled_and_resumes_on_a_fresh_clock() -> None:
    body, children = moving()
    body["spec"]["suspend"] = True
    body, decision = at(body, children, 60, progress(step=4))
    assert decision.restart is None and body["status"]["phase"] == "Suspended"
    body["spec"]["suspend"] = False
    body, decision = at(body, children, 120, progress(step=4))
    assert body["status"]["watchdog"]["since"] == "2026-01-01T12:00:00Z"
    body, decision = at(body, children, 125, progress(step=4))
    assert decision.restart is None


def test_the_same_world_again_writes_nothing_new() -> None:
    body, children = moving()
    again, decision = at(body, children, 5, progress(step=4))
    assert again["status"] == body["status"] and decision.events == ()


def test_a_false_alarm_is_fixed_by_editing_the_running_job() -> None:
    body, children = moving(restartOnStall=False)
    body, _ = at(body, children, 12, progress(step=4))
    assert conditions(body)["Stalled"]["status"] == "True"
    body["spec"]["learner"]["stallTimeoutSeconds"] = 7200  # kubectl edit: a slow step, no hang
    body["metadata"]["generation"] = 2
    body, decision = at(body, children, 13, progress(step=4))
    stalled = conditions(body)["Stalled"]
    assert (stalled["status"], stalled["reason"]) == ("False", "WithinBudget")
    assert decision.restart is None and body["status"]["phase"] == "Training"


def test_a_store_that_cannot_be_read_tells_the_watchdog_nothing() -> None:
    body, children = moving()
    unread = Observed(children=children)  # the read failed: no document, progress_read False
    body, decision = step(body, unread, T0 + timedelta(hours=5))
    assert decision.restart is None and "Stalled" not in conditions(body)
    assert body["status"]["watchdog"]["mark"] == "training step 4"
