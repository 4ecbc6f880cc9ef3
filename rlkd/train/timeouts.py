"""Timeouts the learner arms where TRL and torch leave none, so a hang becomes an error (and the
pod restarts and resumes) even without the operator's watchdog: the budgets are the stall
watchdog's (spec.learner), so an error never comes before the watchdog would act."""

from __future__ import annotations

from typing import Any

from requests import PreparedRequest, Response, Session
from requests.adapters import HTTPAdapter

from rlkd.spec.job import LearnerSpec

TRL_DDP_TIMEOUT = 1800
"""transformers' own process-group timeout, kept when the watchdog is off."""


def collective_timeout(learner: LearnerSpec) -> int:
    """Seconds a collective may wait (ddp_timeout): as long as the longer budget, since ranks
    wait in a barrier while rank 0 prepares or evaluates (the startup budget)."""
    return max(learner.stall_timeout_seconds, learner.startup_timeout_seconds) or TRL_DDP_TIMEOUT


class _DefaultTimeout(HTTPAdapter):
    """An adapter that gives every request without a timeout this one."""

    def __init__(self, timeout: float, max_retries: Any) -> None:
        super().__init__(max_retries=max_retries)
        self.timeout = timeout

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def arm_http_timeout(session: Session, seconds: float) -> None:
    """Give a requests session (TRL's vLLM rollout client sets none) a default timeout, keeping
    the retries its adapters had."""
    for prefix in ("http://", "https://"):
        retries = session.get_adapter(prefix).max_retries  # type: ignore[attr-defined]
        session.mount(prefix, _DefaultTimeout(seconds, retries))
