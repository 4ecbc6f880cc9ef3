"""The job's copy of the default store's Secret.

The operator's default store names a Secret in the operator's own namespace, but a pod can read
Secrets of its own namespace only. So every job that uses the default store gets a copy in its
namespace, `<job>-store-credentials`, owned by the job (deleted with it) and kept equal to the
source: only the two keys the pods read are copied, nothing else the source may hold (the bundled
MinIO's root password, say). Copied by the operator at run time, not decided: its content is a
secret that has no place in a decision, a status or a render.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.naming import child_metadata, store_secret_name
from rlkd.spec.resource import RLKDJob, namespace_of
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR

STORE_SECRET_KEYS = (ACCESS_KEY_VAR, SECRET_KEY_VAR)
"""What the copy holds: the keys the pods read (rlkd.k8s.pods, rlkd.store.config)."""
COPIED_FROM_ANNOTATION = "rlkd.ai/copied-from"
"""`<namespace>/<name>` of the Secret a copy was made from."""


class SecretRef(NamedTuple):
    """A Secret by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def copied_secret(job: RLKDJob, defaults: OperatorDefaults) -> SecretRef | None:
    """The default store's Secret when `job` (resolved) reads a copy of it, else None."""
    default = defaults.storage
    if default is None or not default.credentials_secret or defaults.namespace is None:
        return None
    copy = default.model_copy(update={"credentials_secret": store_secret_name(job)})
    if job.spec.storage != copy:
        return None
    return SecretRef(defaults.namespace, default.credentials_secret)


def credentials_secret(job: RLKDJob, defaults: OperatorDefaults) -> SecretRef | None:
    """Where the store keys of `job`'s pods come from: the default store's Secret for a job that
    reads a copy, else the Secret its spec.storage names (in the job's namespace)."""
    if (source := copied_secret(job, defaults)) is not None:
        return source
    storage = job.spec.storage
    if storage is None or not storage.credentials_secret:
        return None
    return SecretRef(namespace_of(job), storage.credentials_secret)


def build_store_secret(
    job: RLKDJob, source: SecretRef, data: dict[str, str] | None
) -> dict[str, Any]:
    """The copy of `source` for `job` with the source's `data` (base64, as the API returns it):
    only STORE_SECRET_KEYS, and `data`, never `stringData`, so that what the API server stores is
    what was sent and an unchanged source costs no write."""
    metadata = child_metadata(job, store_secret_name(job), "store")
    metadata["annotations"] = {COPIED_FROM_ANNOTATION: str(source)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "data": {key: (data or {})[key] for key in STORE_SECRET_KEYS if key in (data or {})},
    }
