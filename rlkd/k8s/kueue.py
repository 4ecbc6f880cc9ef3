"""Kueue, as the builders see it: which LocalQueue a job's learner waits in, and which fields of
a queued PyTorchJob are Kueue's once it exists.

Kueue admits a queued PyTorchJob by flipping `runPolicy.suspend` to false after merging its
ResourceFlavor's node labels, tolerations (and labels, annotations, scheduling gates) into each
replica's pod template, and undoes both when it evicts the job (pkg/podset in Kueue). The
operator sets those fields only when it creates the job; a patch that sent them again would
jump the queue or take Kueue's placement away.
"""

from __future__ import annotations

import copy
from typing import Any

from rlkd.spec.resource import RLKDJob

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
"""The label Kueue reads to put a job in a LocalQueue (and the RLKDJob label users may set)."""
POD_TEMPLATE_FIELDS = {
    "metadata": ("labels", "annotations"),
    "spec": ("nodeSelector", "tolerations", "schedulingGates"),
}
"""What Kueue's podset info merges into a replica's pod template at admission, by section."""


def queue_name(job: RLKDJob) -> str | None:
    """The LocalQueue of a resolved job (rlkd.k8s.resolve fills it in from the label)."""
    return job.spec.learner.queue_name


def queue_labels(job: RLKDJob) -> dict[str, str]:
    """The labels that queue a child in Kueue: empty for a job without a queue. Any child that
    holds GPUs before the learner is admitted should carry them."""
    name = queue_name(job)
    return {QUEUE_LABEL: name} if name else {}


def queued(child: Any) -> bool:
    """Whether a live (or built) PyTorchJob is in a Kueue queue."""
    return QUEUE_LABEL in ((child or {}).get("metadata") or {}).get("labels", {})


def without_kueue_fields(pytorchjob: dict[str, Any]) -> dict[str, Any]:
    """A copy of a queued PyTorchJob manifest without what Kueue owns once it exists:
    `runPolicy.suspend` and the admission-time fields of every replica's pod template. What is
    left is safe to merge-patch onto the live job."""
    out = copy.deepcopy(pytorchjob)
    spec = out.get("spec", {})
    spec.get("runPolicy", {}).pop("suspend", None)
    for replica in (spec.get("pytorchReplicaSpecs") or {}).values():
        template = replica.get("template", {})
        for section, fields in POD_TEMPLATE_FIELDS.items():
            for name in fields:
                template.get(section, {}).pop(name, None)
    return out
