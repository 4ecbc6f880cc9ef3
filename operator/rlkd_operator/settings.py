"""kopf settings, chosen so that a quiet cluster costs no writes: the operator uses only
event-watching handlers (no kopf progress or diff-base annotations, no finalizers), posts its
own Events on transitions, and watches children by label."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import kopf

from rlkd.k8s.naming import JOB_LABEL
from rlkd_operator.resources import CHILDREN

PEERING_NAME = "rlkd"


@dataclass(frozen=True)
class Options:
    """How this operator runs (the `rlkd operator` flags)."""

    namespaces: tuple[str, ...] = ()
    """Watched namespaces; empty with `clusterwide`."""
    clusterwide: bool = False
    standalone: bool = False
    """No peering: only right when exactly one replica can run."""
    poll_seconds: float = 30.0
    """How often progress documents and failed store checks are read again; also how long an
    endpoint that did not answer is left alone."""
    store_timeout_seconds: float = 10.0
    """The longest one store request waits to connect, and for each read of its answer."""
    resync_polls: int = 10
    """Every this many poll passes, a full LIST of RLKDJobs and children per watched namespace
    (5 requests each) replaces what the watch streams said: a relisted watch can miss DELETED
    events, which would leave gone jobs and children in memory for good."""


def configure(settings: kopf.OperatorSettings, options: Options) -> None:
    settings.peering.name = PEERING_NAME
    settings.peering.clusterwide = options.clusterwide
    settings.peering.mandatory = not options.standalone
    settings.peering.stealth = True  # keep-alives are not worth a log line each
    # kopf posts an Event for every object-log message at or above this level; the operator's
    # own transition Events are posted by rlkd_operator.kube and do not depend on it.
    settings.posting.level = logging.WARNING
    # Resources are fixed (rlkd_operator.resources): no CRD or namespace scanning, so no RBAC
    # for customresourcedefinitions or namespaces.
    settings.scanning.disabled = True
    for resource in CHILDREN.values():
        settings.watching.label_selectors[resource.group, resource.plural] = JOB_LABEL
