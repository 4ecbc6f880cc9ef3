"""The operator's own Kubernetes API calls: create, merge-patch, delete, read a Secret (or a
child whose name is taken), post an Event; API errors on children as ApplyFailures.

The official client is synchronous, so each call runs in a worker thread; kopf keeps its own
async session for watching. Both authenticate from one client configuration
(`load_configuration`), so the operator and kopf always talk to the same cluster as the same
identity.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
import urllib3
from kubernetes import client, config

from rlkd import __version__
from rlkd.errors import StoreError
from rlkd.k8s.store_secret import SecretRef
from rlkd.store import Credentials
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR
from rlkd_operator.decide import ApplyFailure
from rlkd_operator.resources import (
    APPLIED,
    EVENTS,
    PATCHED,
    PODS,
    RLKDJOB_STATUS,
    RLKDJOBS,
    SECRETS,
    WORKLOADS,
    APIResource,
)

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = f"rlkd-operator/{__version__}"
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
"""The label Kueue puts on a Workload with the uid of the job it gates: the stable link (its
name is Kueue's own hash of the job's name)."""
EVENT_SOURCE = "rlkd-operator"
TRAINING_JOB_LABEL = "training.kubeflow.org/job-name"
"""The label the Training Operator puts on a PyTorchJob's pods, with the job's name."""
NOT_SERVED_FIX = {
    "PyTorchJob": "install the Kubeflow Training Operator (it serves kubeflow.org/v1 PyTorchJob)"
}
"""How to make a child kind that the API server does not serve available."""


class ApplyError(Exception):
    """The API server would not take a child; `failure` says why, fit for a condition."""

    def __init__(self, failure: ApplyFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """In a pod, the service account; elsewhere `kubeconfig`, $KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not kubeconfig:
        config.load_incluster_config(client_configuration=configuration)
    else:
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        config.load_kube_config(
            config_file=os.path.expanduser(path), client_configuration=configuration
        )
    return configuration


def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """The same identity for kopf's own session (an `@kopf.on.login` answer)."""
    api_key = configuration.get_api_key_with_prefix
    header = api_key("BearerToken") or api_key("authorization")
    scheme, _, token = (header or "").rpartition(" ")
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class Kube:
    """A few verbs over any resource in rlkd_operator.resources."""

    def __init__(self, configuration: client.Configuration) -> None:
        self._api = client.ApiClient(configuration)
        # Audit logs and managedFields name the writer by this (the client's default is
        # "OpenAPI-Generator/<version>/python").
        self._api.user_agent = USER_AGENT

    async def apply(self, manifest: dict[str, Any], exists: bool) -> dict[str, Any]:
        """Create-or-patch a child (merge patch, never PUT). `exists` says which to try first:
        PATCH of a missing object falls back to POST once; POST of a name that is taken patches
        only an object this RLKDJob controls. Anything else is an ApplyError."""
        resource = APPLIED[manifest["kind"]]
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            if exists:
                try:
                    return await self._call("PATCH", resource.path(namespace, name), manifest)
                except client.ApiException as exc:
                    if exc.status != 404:
                        raise
            try:
                return await self._call("POST", resource.path(namespace), without_nulls(manifest))
            except client.ApiException as exc:
                if exc.status != 409:
                    raise
            live = await self._call("GET", resource.path(namespace, name))
            _check_controlled(live, manifest)
            return await self._call("PATCH", resource.path(namespace, name), manifest)
        except client.ApiException as exc:
            raise ApplyError(failure_of(resource, manifest, exc)) from None

    async def patch_child(self, patch: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch an existing child; None when it is gone (nothing left to change)."""
        resource = PATCHED[patch["kind"]]
        path = resource.path(patch["metadata"]["namespace"], patch["metadata"]["name"])
        try:
            return await self._call("PATCH", path, patch)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise ApplyError(failure_of(resource, patch, exc)) from None

    async def workload_of(self, owner: Mapping[str, Any]) -> dict[str, Any] | None:
        """Kueue's Workload of a queued PyTorchJob: the one labelled with its uid
        (kueue.x-k8s.io/job-uid) that it controls. None while Kueue has made none, and where
        Kueue is not installed or the operator may not read Workloads (the job's own Suspended
        condition is reported then)."""
        meta = owner["metadata"]
        query = [("labelSelector", f"{KUEUE_JOB_UID_LABEL}={meta['uid']}")]
        try:
            answer = await self._call("GET", WORKLOADS.path(meta["namespace"]), query=query)
        except client.ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        return next(
            (
                item
                for item in answer.get("items") or []
                if any(
                    ref.get("uid") == meta["uid"] and ref.get("controller")
                    for ref in item.get("metadata", {}).get("ownerReferences") or []
                )
            ),
            None,
        )

    async def list_objects(
        self, resource: APIResource, namespace: str | None, labels: str | None = None
    ) -> list[dict[str, Any]]:
        """Every object of a kind in `namespace` (None: cluster-wide) carrying the label
        `labels`, each with its kind and apiVersion (a list's items carry neither)."""
        query = [("labelSelector", labels)] if labels else []
        answer = await self._call("GET", resource.path(namespace), query=query)
        head = {"apiVersion": resource.api_version, "kind": resource.kind}
        return [head | item for item in answer.get("items") or []]

    async def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._call("PATCH", RLKDJOB_STATUS.path(namespace, name), {"status": patch})

    async def post_event(
        self, job: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `job`. Posted by the operator itself rather than through kopf,
        whose poster exists only inside its own per-object tasks (not in the poller)."""
        meta = job["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": job["apiVersion"],
                "kind": job["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": EVENT_SOURCE},
            "reportingComponent": EVENT_SOURCE,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._call("POST", EVENTS.path(meta["namespace"]), event)

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete an RLKDJob (ttlSecondsAfterFinished); its children follow by ownerReference."""
        try:
            await self._call("DELETE", RLKDJOBS.path(namespace, name))
        except client.ApiException as exc:
            if exc.status != 404:
                raise

    async def delete_learner_pods(self, namespace: str, pytorchjob: str) -> list[str]:
        """Delete the pods of a PyTorchJob (the Training Operator labels them with its name and
        recreates them); the names deleted. Filtered here too, not only by the selector."""
        selector = f"{TRAINING_JOB_LABEL}={pytorchjob}"
        deleted = []
        for pod in await self.list_objects(PODS, namespace, selector):
            meta = pod["metadata"]
            if (meta.get("labels") or {}).get(TRAINING_JOB_LABEL) != pytorchjob:
                continue
            try:
                await self._call("DELETE", PODS.path(namespace, meta["name"]))
            except client.ApiException as exc:
                if exc.status != 404:  # gone already is what we want
                    raise
            deleted.append(meta["name"])
        return deleted

    async def secret_credentials(self, secret: SecretRef, what: str) -> Credentials:
        """The key pair in a job's storage Secret (`what` it is, for messages), read as its pods
        read it (credentials_from_secret). StoreError when unusable; the message never holds a
        secret value."""
        where = f"Secret {secret} ({what})"
        live = await self.get(SECRETS, secret.namespace, secret.name)
        if live is None:
            raise StoreError(
                f"{where} does not exist; create it with keys {ACCESS_KEY_VAR} and {SECRET_KEY_VAR}"
            )
        return credentials_from_secret(live.get("data") or {}, where)

    async def get(self, resource: APIResource, namespace: str, name: str) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            return await self._call("GET", resource.path(namespace, name))
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            return None

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """One API call; the answer as JSON (an object for every path the operator calls)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = MERGE_PATCH if method == "PATCH" else "application/json"
        answer: dict[str, Any] = await asyncio.to_thread(
            self._api.call_api,
            path,
            method,
            query_params=query or [],
            header_params=headers,
            body=body,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        return answer


def credentials_from_secret(data: Mapping[str, str], where: str) -> Credentials:
    """The key pair in a Secret's `data` (base64 values), as the job's pods get it. The inference
    servers take each value as it is (an environment variable from a secretKeyRef), so a value
    that works only once stripped (a trailing newline from `--from-file`) is refused here rather
    than passing the operator's check and failing in the pods."""
    names = (ACCESS_KEY_VAR, SECRET_KEY_VAR)
    missing = [name for name in names if not data.get(name)]
    if missing:
        raise StoreError(f"{where} has no {' or '.join(missing)}; add the key")
    try:
        values = [base64.b64decode(data[name], validate=True).decode() for name in names]
    except (binascii.Error, UnicodeDecodeError):
        raise StoreError(
            f"{where} holds a value that is not base64 of UTF-8 text; set the keys with "
            "`kubectl create secret generic ... --from-literal`"
        ) from None
    padded = [name for name, value in zip(names, values, strict=True) if value != value.strip()]
    if padded:
        raise StoreError(
            f"{where}: {' and '.join(padded)} has whitespace around it, which the job's "
            "pods would send as part of the key; set the keys with `kubectl create secret "
            "generic ... --from-literal`"
        )
    return Credentials(*values)


def controlled(live: Mapping[str, Any], manifest: Mapping[str, Any]) -> bool:
    """Whether `live` is controlled by the RLKDJob that `manifest` names as its owner."""
    owner = manifest["metadata"]["ownerReferences"][0]
    owners = live.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner["uid"] and ref.get("controller") for ref in owners)


def _check_controlled(live: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
    """Patch a child that exists only when its controller is this RLKDJob, never an unrelated
    object that happens to have the child's name."""
    if controlled(live, manifest):
        return
    owner = manifest["metadata"]["ownerReferences"][0]
    meta = manifest["metadata"]
    raise ApplyError(
        ApplyFailure(
            "NameConflict",
            f"{manifest['kind']} {meta['namespace']}/{meta['name']} exists and is not controlled "
            f"by RLKDJob {owner['name']}; delete or rename it, or rename the RLKDJob",
            permanent=False,
        )
    )


def failure_of(
    resource: APIResource, manifest: Mapping[str, Any], exc: client.ApiException
) -> ApplyFailure:
    """An API error on a child as a condition: 400 and 422 reject the request itself (retrying
    the same spec cannot help); 404 means the kind is not served, unless the namespace is gone;
    403, 409, 429 and 5xx may pass (a quota freed, a webhook back), so they are retried."""
    meta = manifest["metadata"]
    what = f"{manifest['kind']} {meta['namespace']}/{meta['name']}"
    try:
        answer = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        answer = {}
    said = str(answer.get("message") or exc.reason)
    gone = (answer.get("details") or {}).get("kind") == "namespaces"  # else the kind is unknown
    if exc.status == 404 and not gone:
        fix = NOT_SERVED_FIX.get(
            manifest["kind"], f"check that the API server serves {resource.plural}"
        )
        message = (
            f"cannot create {what}: {resource.kind} ({resource.api_version}) is not served "
            f"({said}); {fix}"
        )
        return ApplyFailure(f"{resource.kind}NotServed", message, permanent=False)
    permanent = exc.status in (400, 422)
    verb = "rejected" if permanent else "refused"
    reason = str(answer.get("reason") or exc.reason or "Error").replace(" ", "")
    message = f"the API server {verb} {what} ({exc.status} {reason}): {said}"
    if exc.status == 403 and ("cannot " in said or "can't " in said):  # RBAC, not a quota
        message = f"{message[:800]}; {RBAC_FIX}"
    return ApplyFailure(reason, message[:1024], permanent)


RBAC_FIX = (
    "the operator's ServiceAccount lacks this permission: install the RBAC of the chart of the "
    "operator's own version (generated from rlkd_operator.resources)"
)


def unanswered(exc: BaseException) -> bool:
    """The API server could not be reached or failed (connection refused, a timeout, a 5xx):
    worth one line and a retry, not a traceback."""
    if isinstance(exc, client.ApiException):
        status = int(exc.status or 0)
        return status == 0 or status >= 500
    return isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def without_nulls(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """`manifest` without the nulls of a merge patch (rlkd_operator.built: keys a rebuild
    dropped), for a POST."""
    return {
        key: without_nulls(value) if isinstance(value, Mapping) else value
        for key, value in manifest.items()
        if value is not None
    }


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: changed keys only, None for
    removed ones."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            if nested := merge_patch(before, value):
                patch[key] = nested
        elif before != value:
            patch[key] = value
    return patch
