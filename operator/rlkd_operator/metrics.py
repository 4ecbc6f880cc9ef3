"""Prometheus metrics: reconciles and their errors counted as they happen; jobs per phase and the
structure-reward errors the learners report, computed from the watched jobs at scrape time."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rlkd.spec.status import PHASES
from rlkd_operator.world import World


class Metrics:
    """One registry per operator, so several operators in one process (tests) stay apart."""

    def __init__(self, world: World) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "rlkd_operator_reconciles", "Reconciles of RLKDJobs.", registry=self.registry
        )
        self.errors = Counter(
            "rlkd_operator_reconcile_errors",
            "Reconciles that failed and will be retried.",
            registry=self.registry,
        )
        self.stalls = Counter(
            "rlkd_learner_stalls",
            "Learners found Stalled by the watchdog (spec.learner.stallTimeoutSeconds).",
            ["namespace", "job"],
            registry=self.registry,
        )
        self.registry.register(_JobsCollector(world))

    def serve(self, port: int, address: str) -> None:
        """Expose /metrics on `address:port`."""
        start_http_server(port, address, registry=self.registry)


class _JobsCollector(Collector):
    def __init__(self, world: World) -> None:
        self._world = world

    def collect(self) -> Iterator[Metric]:
        jobs = list(self._world.jobs.values())
        phases = GaugeMetricFamily("rlkd_jobs", "RLKDJobs by status.phase.", labels=["phase"])
        counts = Tally((job.get("status") or {}).get("phase", "Pending") for job in jobs)
        for phase in PHASES:
            phases.add_metric([phase], counts[phase])
        yield phases
        errors = GaugeMetricFamily(
            "rlkd_job_reward_errors",
            "Rewards the learner could not compute (e.g. the GSRM or judge failed), by reason, "
            "from the job's progress document.",
            labels=["namespace", "job", "reason"],
        )
        for job in jobs:
            progress = (job.get("status") or {}).get("progress") or {}
            for reason, count in (progress.get("rewardErrors") or {}).items():
                meta = job["metadata"]
                errors.add_metric([meta["namespace"], meta["name"], reason], count)
        yield errors
