"""Every Kubernetes resource the operator touches, with the verbs it uses on each: the one list
that the API adapter resolves paths from and the ClusterRole is generated from (a test keeps the
shipped manifest and the requests the operator really makes inside it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlkd.spec.resource import GROUP, KIND, PLURAL, VERSION


@dataclass(frozen=True)
class APIResource:
    """One resource (or subresource) and the verbs the operator needs on it."""

    group: str
    version: str
    plural: str
    kind: str
    verbs: tuple[str, ...]
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection, or of one object when `name` is given."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        plural, _, sub = self.plural.partition("/")
        parts = [base, *(["namespaces", namespace] if namespace else []), plural]
        parts += [name] if name else []
        parts += [sub] if sub else []
        return "/".join(parts)


WATCHED = ("list", "watch")
# Children are created once and merge-patched after (never PUT, never deleted: ownerReferences
# let the garbage collector delete them with their RLKDJob); get: whose is a name taken on create.
CHILD = (*WATCHED, "get", "create", "patch")

RLKDJOBS = APIResource(GROUP, VERSION, PLURAL, KIND, (*WATCHED, "delete"))  # delete: ttl
RLKDJOB_STATUS = APIResource(GROUP, VERSION, f"{PLURAL}/status", KIND, ("patch",))
# Children name their RLKDJob owner with blockOwnerDeletion, which the API server allows only to
# those who may update the owner's finalizers (OwnerReferencesPermissionEnforcement).
RLKDJOB_FINALIZERS = APIResource(GROUP, VERSION, f"{PLURAL}/finalizers", KIND, ("update",))
CONFIGMAPS = APIResource("", "v1", "configmaps", "ConfigMap", CHILD)
SERVICES = APIResource("", "v1", "services", "Service", CHILD)
DEPLOYMENTS = APIResource("apps", "v1", "deployments", "Deployment", CHILD)
PYTORCHJOBS = APIResource("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", CHILD)
JOBS = APIResource("batch", "v1", "jobs", "Job", CHILD)  # the prepare Job
NETWORKPOLICIES = APIResource(
    "networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", CHILD
)  # <job>-inference: only the job's own pods reach its servers
# Read: spec.storage.credentialsSecret, the default store's Secret. Created and patched: a job's
# copy of the default store's Secret (rlkd.k8s.store_secret), read by name: never listed or
# watched, so the operator sees no Secret it was not told of.
SECRETS = APIResource("", "v1", "secrets", "Secret", ("get", "create", "patch"))
SOURCE_SECRET = APIResource("", "v1", "secrets", "Secret", ("get",))
"""In the operator's own namespace, the default store's Secret (by name) is all it reads."""
# Kueue's Workload of a queued learner: read for its admission state, patched (spec.active) to
# suspend and resume through Kueue. Kueue creates it; the operator never creates or deletes one.
WORKLOADS = APIResource(
    "kueue.x-k8s.io", "v1beta2", "workloads", "Workload", ("get", "list", "patch")
)
EVENTS = APIResource("", "v1", "events", "Event", ("create",))
# A Stalled learner's pods, deleted for the Training Operator to recreate (rlkd_operator.stall).
PODS = APIResource("", "v1", "pods", "Pod", ("list", "delete"))
# kopf's peering (one active replica): the cluster-wide object for --all-namespaces, a namespaced
# one per watched namespace otherwise.
CLUSTER_PEERINGS = APIResource(
    "kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", ("list", "watch", "patch"), False
)
PEERINGS = APIResource("kopf.dev", "v1", "kopfpeerings", "KopfPeering", ("list", "watch", "patch"))

ALL = (
    RLKDJOBS,
    RLKDJOB_STATUS,
    RLKDJOB_FINALIZERS,
    CONFIGMAPS,
    SERVICES,
    DEPLOYMENTS,
    PYTORCHJOBS,
    JOBS,
    NETWORKPOLICIES,
    SECRETS,
    WORKLOADS,
    EVENTS,
    PODS,
    CLUSTER_PEERINGS,
    PEERINGS,
)
CHILDREN = {
    r.kind: r for r in (CONFIGMAPS, SERVICES, DEPLOYMENTS, JOBS, PYTORCHJOBS, NETWORKPOLICIES)
}
"""The kinds the builders make, by kind."""
APPLIED = {**CHILDREN, SECRETS.kind: SECRETS}
"""The kinds the operator creates: the children, and a job's copy of the default store's Secret."""
PATCHED = {**CHILDREN, WORKLOADS.kind: WORKLOADS}
"""The kinds a decision may merge-patch: the children, and a queued learner's Workload."""


def rbac_rules() -> dict[str, list[dict[str, Any]]]:
    """One rule per resource, exactly the verbs above: `namespaced` for a Role in each watched
    namespace, `cluster` for the cluster-scoped kinds that only an all-namespaces operator uses,
    `source` for a Role in the operator's namespace of a namespaced operator (the chart adds the
    Secret's name as resourceNames). The chart's RBAC (and manifests/, rendered from the chart)
    is built from these."""
    rules: dict[str, list[dict[str, Any]]] = {"namespaced": [], "cluster": [], "source": []}
    for r in ALL:
        rules["namespaced" if r.namespaced else "cluster"].append(_rule(r))
    rules["source"].append(_rule(SOURCE_SECRET))
    return rules


def _rule(r: APIResource) -> dict[str, Any]:
    return {"apiGroups": [r.group], "resources": [r.plural], "verbs": list(r.verbs)}


if __name__ == "__main__":  # make generate: charts/rlkd-operator/files/rbac-rules.yaml
    import yaml

    print("# Generated from rlkd_operator.resources by `make generate`; do not edit.")
    print(yaml.safe_dump(rbac_rules(), sort_keys=False), end="")
