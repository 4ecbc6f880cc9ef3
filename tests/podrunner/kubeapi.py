"""The API calls the runner makes, as the controllers it stands in for make them: list the
workloads, read Secrets and ConfigMaps, merge-patch the `status` subresource. Its own
User-Agent, so a test can tell its requests from the operator's."""

from __future__ import annotations

from typing import Any

import aiohttp

USER_AGENT = "rlkd-podrunner"
KINDS = {
    "Deployment": "apis/apps/v1/namespaces/{ns}/deployments",
    "Service": "api/v1/namespaces/{ns}/services",
    "Job": "apis/batch/v1/namespaces/{ns}/jobs",
    "PyTorchJob": "apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs",
    "Secret": "api/v1/namespaces/{ns}/secrets",
    "ConfigMap": "api/v1/namespaces/{ns}/configmaps",
}


class KubeAPI:
    """A session on the API server at `url` (no auth: the emulator takes any token)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})

    def _path(self, kind: str, namespace: str, name: str | None = None) -> str:
        path = f"{self.url}/{KINDS[kind].format(ns=namespace)}"
        return f"{path}/{name}" if name else path

    async def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        async with self._session.get(self._path(kind, namespace)) as response:
            response.raise_for_status()
            return list((await response.json()).get("items") or [])

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        async with self._session.get(self._path(kind, namespace, name)) as response:
            if response.status == 404:
                return None
            response.raise_for_status()
            body: dict[str, Any] = await response.json()
            return body

    async def patch_status(
        self, kind: str, namespace: str, name: str, old: dict[str, Any], new: dict[str, Any]
    ) -> None:
        """Merge-patch the status from `old` to `new`."""
        status = merge_patch(old, new)
        async with self._session.patch(
            f"{self._path(kind, namespace, name)}/status",
            json={"status": status},
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            if response.status == 404:
                return  # deleted meanwhile: nothing to report on
            response.raise_for_status()

    async def close(self) -> None:
        await self._session.close()


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: keys `new` drops are null,
    objects recursively, anything else (lists too) whole."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            patch[key] = merge_patch(old[key], value)
        else:
            patch[key] = value
    return patch
