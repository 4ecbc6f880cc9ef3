"""The stall watchdog, pure: a running learner whose progress has not moved for its budget is
Stalled. Judged by the operator's own clock (when it saw the progress change, kept in
status.watchdog), never by the learner's timestamps: a hung learner writes none, and its clock
may be skewed. The rules (what counts as moving, which budget) are rlkd.spec.progress's, shared
with `rlkd run`.

Waiting in Kueue, suspended, preparing (the prepare Job) or restarting is not running: no clock
runs, and the learner starts on its startup budget when it runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rlkd.spec.job import LearnerSpec
from rlkd.spec.progress import ProgressDocument, describe_stall, progress_mark, stall_budget
from rlkd.spec.status import Watchdog

Action = Literal["restart", "report", "fail"]


@dataclass(frozen=True)
class Verdict:
    """What the watchdog saw: its new memory; when stalled, what to do and the words for it;
    `moved` when the learner's progress changed."""

    watchdog: Watchdog
    action: Action | None = None
    message: str = ""
    moved: bool = False


def check(
    old: Watchdog | None,
    *,
    running: bool,
    doc: ProgressDocument | None,
    learner: LearnerSpec,
    now: datetime,
    stamp: str,
) -> Verdict:
    """The watchdog's next state for a learner; `stamp` is `now` as status writes it."""
    restarts = old.restarts if old else 0
    if not running:
        return Verdict(Watchdog(restarts=restarts))
    mark = progress_mark(doc)
    if old is None or old.since is None:
        return Verdict(Watchdog(mark=mark, since=stamp, restarts=restarts))
    if mark != old.mark:
        return Verdict(Watchdog(mark=mark, since=stamp, moved=True, restarts=restarts), moved=True)
    budget, field = stall_budget(learner, moved=old.moved, doc=doc)
    waited = now - datetime.fromisoformat(old.since.replace("Z", "+00:00"))
    if budget == 0 or waited.total_seconds() <= budget:
        return Verdict(old)
    what = describe_stall(doc, waited=waited, budget=budget, field=field, now=now)
    if not learner.restart_on_stall:
        return Verdict(old, "report", what + "; spec.learner.restartOnStall is false")
    if restarts >= learner.max_stall_restarts:
        limit = learner.max_stall_restarts
        return Verdict(
            old,
            "fail",
            f"{what}; {restarts} stall restarts done, spec.learner.maxStallRestarts is {limit}",
        )
    return Verdict(
        Watchdog(mark=mark, since=stamp, restarts=restarts + 1),
        "restart",
        f"{what}; restarting the learner from its newest complete checkpoint "
        f"(stall restart {restarts + 1} of {learner.max_stall_restarts})",
    )
