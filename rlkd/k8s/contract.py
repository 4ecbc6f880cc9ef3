"""The pods that run `rlkd` (the learner, the prepare Job): where they find the resolved job and
the store, by the env contract of rlkd.spec.runtime."""

from __future__ import annotations

from typing import Any

from rlkd.k8s.config import JOB_KEY, MOUNT_DIR
from rlkd.k8s.naming import config_name
from rlkd.k8s.pods import env
from rlkd.k8s.resolve import storage_of
from rlkd.spec.progress import run_prefix
from rlkd.spec.resource import RLKDJob, namespace_of
from rlkd.spec.runtime import (
    JOB_FILE_ENV,
    STORE_BUCKET_ENV,
    STORE_ENDPOINT_ENV,
    STORE_PREFIX_ENV,
    STORE_REGION_ENV,
    STORE_SECRET_DIR,
)


def job_file_env() -> dict[str, str]:
    """Where `rlkd train` and `rlkd prepare` find the resolved job (the mounted ConfigMap)."""
    return env(JOB_FILE_ENV, f"{MOUNT_DIR}/{JOB_KEY}")


def store_env(job: RLKDJob) -> list[dict[str, str]]:
    """The store of a resolved job as the pods running `rlkd` read it (rlkd.spec.runtime): the
    endpoint, the bucket and the run's own prefix, the region when set."""
    storage = storage_of(job)
    variables = [
        env(STORE_ENDPOINT_ENV, storage.endpoint),
        env(STORE_BUCKET_ENV, storage.bucket),
        env(STORE_PREFIX_ENV, run_prefix(storage.prefix, namespace_of(job), job.metadata.name)),
    ]
    if storage.region:
        variables.append(env(STORE_REGION_ENV, storage.region))
    return variables


def job_volumes(job: RLKDJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumeMounts, volumes) of a pod running `rlkd`: the ConfigMap at /etc/rlkd, and the
    storage Secret at STORE_SECRET_DIR when the store names one (files, never env values)."""
    storage = storage_of(job)
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": MOUNT_DIR, "readOnly": True}]
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": config_name(job)}}]
    if storage.credentials_secret:
        mounts.append(
            {"name": "store-credentials", "mountPath": STORE_SECRET_DIR, "readOnly": True}
        )
        volumes.append(
            {"name": "store-credentials", "secret": {"secretName": storage.credentials_secret}}
        )
    return mounts, volumes
