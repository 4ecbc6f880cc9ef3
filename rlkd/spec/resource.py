"""The RLKDJob resource as a whole: its API identity, metadata and the name rule."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from rlkd.spec.base import Rule, SpecModel
from rlkd.spec.job import RLKDJobSpec
from rlkd.spec.status import RLKDJobStatus

GROUP = "rlkd.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "RLKDJob"
PLURAL = "rlkdjobs"
SINGULAR = "rlkdjob"
SHORT_NAMES = ("rlkd",)

# Children are named after the job (the PyTorchJob exactly, Services `<name>-<role>`), and
# PyTorchJob and Service names must be DNS-1035 labels of at most 63 characters: so the name is
# a DNS-1123 label that starts with a letter and leaves room for the longest suffix.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH = 45


class ObjectMeta(SpecModel):
    """The Kubernetes object metadata fields (the API server fills in the read-only ones)."""

    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    finalizers: list[str] = Field(default_factory=list)
    owner_references: list[dict[str, Any]] = Field(default_factory=list)
    managed_fields: list[dict[str, Any]] = Field(default_factory=list)
    self_link: str | None = None


class RLKDJob(SpecModel):
    """An RLKDJob document, as written in a file or read from the API server."""

    api_version: Literal["rlkd.ai/v1alpha1"] = API_VERSION
    kind: Literal["RLKDJob"] = KIND
    metadata: ObjectMeta
    spec: RLKDJobSpec
    status: RLKDJobStatus | None = None

    rules = (
        Rule(
            "metadata.name",
            "is required",
            "has(self.metadata.name)",
            lambda job: job.metadata.name is not None,
        ),
        Rule(
            "metadata.name",
            "must be a DNS-1123 label that starts with a letter: lowercase letters, digits and "
            "'-' (it names the PyTorchJob and the Services)",
            f"self.metadata.name.matches('{NAME_PATTERN}')",
            lambda job: job.metadata.name is None or re.fullmatch(NAME_PATTERN, job.metadata.name),
        ),
        Rule(
            "metadata.name",
            f"must be at most {MAX_NAME_LENGTH} characters (child names add a suffix)",
            f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
            lambda job: len(job.metadata.name or "") <= MAX_NAME_LENGTH,
        ),
    )
