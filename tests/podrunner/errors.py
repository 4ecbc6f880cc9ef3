"""What stops the pod runner: a pod it cannot run as the manifest says."""

from __future__ import annotations


class PodError(Exception):
    """A pod the runner cannot run as written (a volume kind, a field it does not play)."""


class UnknownImage(PodError):
    """An image with no local stand-in in the runner's table."""


class NotYet(Exception):
    """What a pod needs is not there yet (a Secret, a ConfigMap): a kubelet waits and retries."""
