"""The NetworkPolicy that locks the job's inference servers: the rollout server runs with its
weight-update endpoints open (VLLM_SERVER_DEV_MODE), so only the job's own pods may reach any
of its servers, and a monitoring namespace only their metrics port."""

from __future__ import annotations

from typing import Any

from rlkd.k8s.inference import PORT_NAME, inference_roles
from rlkd.k8s.naming import COMPONENT_LABEL, JOB_LABEL, child_metadata, network_policy_name
from rlkd.spec.resource import RLKDJob

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
"""Set by the API server on every namespace (1.21+): selects one namespace by its name."""


def build_network_policy(job: RLKDJob) -> dict[str, Any] | None:
    """The NetworkPolicy of a resolved job's inference pods; None when it deploys no server.

    Its own pods (learner, prepare Job, servers) may connect on every port: NCCL's weight
    transfer opens connections both ways on ports it picks. The operator never calls a server
    (it reads Deployment status), so it gets no rule. vLLM serves /metrics on its API port, so
    the monitoring namespace reaches that port, and only that one.
    """
    if not inference_roles(job.spec):
        return None
    name = job.metadata.name
    ingress: list[dict[str, Any]] = [
        {"from": [{"podSelector": {"matchLabels": {JOB_LABEL: name}}}]}
    ]
    network = job.spec.network
    if network is not None and network.monitoring_namespace:
        namespace = {"matchLabels": {NAMESPACE_NAME_LABEL: network.monitoring_namespace}}
        ingress.append(
            {
                "from": [{"namespaceSelector": namespace}],
                "ports": [{"port": PORT_NAME, "protocol": "TCP"}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(job, network_policy_name(job), "inference"),
        "spec": {
            "podSelector": {"matchLabels": {JOB_LABEL: name, COMPONENT_LABEL: "inference"}},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
