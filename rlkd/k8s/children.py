"""Everything an RLKDJob becomes, built in one pure call: the operator applies it, `rlkd render`
prints it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rlkd.k8s.annotate import build_annotate_job, gsrm_build
from rlkd.k8s.config import build_config_map
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.gsrm_build import build_gsrm_pytorchjob
from rlkd.k8s.inference import build_deployment, build_service, inference_roles
from rlkd.k8s.learner import build_pytorchjob
from rlkd.k8s.network import build_network_policy
from rlkd.k8s.prepare import build_prepare_job
from rlkd.k8s.resolve import resolve_job
from rlkd.spec.progress import needs_prepare
from rlkd.spec.resource import RLKDJob
from rlkd.spec.runtime import InferenceRole

Manifest = dict[str, Any]


@dataclass(frozen=True)
class InferenceChild:
    """One role's vLLM server: its Deployment and the Service in front of it."""

    role: InferenceRole
    deployment: Manifest
    service: Manifest


@dataclass(frozen=True)
class Children:
    """The children of one RLKDJob."""

    config: Manifest
    """The ConfigMap with the resolved job (`rlkd train` reads it)."""
    inference: dict[InferenceRole, InferenceChild]
    """One vLLM server per role that needs one (rlkd.k8s.inference_roles), in role order."""
    learner: Manifest
    """The PyTorchJob."""
    network_policy: Manifest | None = None
    """The NetworkPolicy `<job>-inference` locking the servers (None without servers)."""
    prepare: Manifest | None = None
    """The batch Job running `rlkd prepare`, when the job needs preparing
    (rlkd.spec.progress.needs_prepare)."""
    annotate: Manifest | None = None
    """The batch Job running `rlkd annotate`, when the job builds its GSRM (spec.gsrm.build)."""
    build: Manifest | None = None
    """The PyTorchJob training and gating the GSRM, when the job builds it (spec.gsrm.build)."""

    def all(self) -> list[Manifest]:
        """Every child in apply order: what pods mount and call exists before the pods start,
        and the servers are locked before they do; then the steps in the order they run."""
        served = [m for c in self.inference.values() for m in (c.service, c.deployment)]
        steps = [self.annotate, self.build, self.prepare]
        locked = [self.network_policy] if self.network_policy is not None else []
        return [self.config, *locked, *served, *(m for m in steps if m is not None), self.learner]


def _plain(manifest: Manifest) -> Manifest:
    """A fresh tree of plain JSON values that shares nothing with the builders' constants, so a
    caller may change it freely."""
    plain: Manifest = json.loads(json.dumps(manifest))
    return plain


def build_children(
    job: RLKDJob, defaults: OperatorDefaults, *, inference_replicas: int | None = None
) -> Children:
    """The children of `job`. Pure: the same job and defaults give the same manifests.

    `inference_replicas` overrides every server's replica count: 0 scales inference to zero
    (a finished job keeps its Services, and its Deployments cost no GPUs). A suspended job
    (`spec.suspend`) always gets 0. Raises SpecError when the job cannot be built, e.g. without
    a store in the spec or the defaults.
    """
    if inference_replicas is not None and inference_replicas < 0:
        raise ValueError(f"inference_replicas must be >= 0, not {inference_replicas}")
    job = resolve_job(job, defaults)
    replicas = 0 if job.spec.suspend else inference_replicas
    builds = gsrm_build(job.spec) is not None
    return Children(
        config=_plain(build_config_map(job)),
        inference={
            role: InferenceChild(
                role,
                deployment=_plain(build_deployment(job, role, defaults, replicas)),
                service=_plain(build_service(job, role)),
            )
            for role in inference_roles(job.spec)
        },
        learner=_plain(build_pytorchjob(job, defaults)),
        network_policy=_plain(policy) if (policy := build_network_policy(job)) else None,
        prepare=_plain(build_prepare_job(job, defaults)) if needs_prepare(job.spec) else None,
        annotate=_plain(build_annotate_job(job, defaults)) if builds else None,
        build=_plain(build_gsrm_pytorchjob(job, defaults)) if builds else None,
    )
