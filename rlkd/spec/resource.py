"""The RLKDJob resource as a whole: its API identity and metadata."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from rlkd.spec.base import SpecModel
from rlkd.spec.job import RLKDJobSpec
from rlkd.spec.refs import JobName
from rlkd.spec.status import RLKDJobStatus

API_VERSION: Final = "rlkd.ai/v1alpha1"
GROUP, _, VERSION = API_VERSION.partition("/")
KIND: Final = "RLKDJob"
PLURAL = "rlkdjobs"
SINGULAR = "rlkdjob"
SHORT_NAMES = ("rlkd",)
DEFAULT_NAMESPACE = "default"
"""The namespace of a job whose document names none (what kubectl would use)."""


class ObjectMeta(SpecModel):
    """The Kubernetes object metadata fields (the API server fills in the read-only ones)."""

    name: JobName
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


def namespace_of(job: RLKDJob) -> str:
    """The namespace the job and all its children live in."""
    return job.metadata.namespace or DEFAULT_NAMESPACE
