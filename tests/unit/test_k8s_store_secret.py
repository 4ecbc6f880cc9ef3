"""A job on the default store reads its keys from its own copy of the default store's Secret:
which jobs get one, where their keys come from, and what the copy holds."""

from __future__ import annotations

from rlkd.k8s.resolve import resolve_job
from rlkd.k8s.store_secret import (
    SecretRef,
    build_store_secret,
    copied_secret,
    credentials_secret,
)
from rlkd.spec.resource import RLKDJob
from tests.jobs import DEFAULTS, STORE, make_job

OWN = {
    "storage": {"endpoint": "https://s3.example.com", "bucket": "mine", "credentialsSecret": "k"}
}


def resolved(patch: dict | None = None, defaults=DEFAULTS) -> RLKDJob:
    return resolve_job(make_job(patch or {}), defaults)


def test_a_job_on_the_default_store_reads_a_copy_made_from_the_operators_namespace() -> None:
    job = resolved()
    assert job.spec.storage.credentials_secret == "demo-store-credentials"
    source = SecretRef("rlkd-system", "rlkd-s3-credentials")
    assert copied_secret(job, DEFAULTS) == source
    assert credentials_secret(job, DEFAULTS) == source


def test_a_job_with_its_own_store_reads_its_own_secret() -> None:
    job = resolved(OWN)
    assert copied_secret(job, DEFAULTS) is None
    assert credentials_secret(job, DEFAULTS) == SecretRef("team-a", "k")
    no_keys = resolved({"storage": {"endpoint": "https://s3.example.com", "bucket": "mine"}})
    assert credentials_secret(no_keys, DEFAULTS) is None


def test_a_default_store_copied_by_the_same_name_is_the_users_own_store() -> None:
    """spec.storage that happens to equal the default store, with its own Secret, is not copied."""
    own = {"storage": STORE.model_copy(update={"credentials_secret": "mine"}).to_dict()}
    assert copied_secret(resolved(own), DEFAULTS) is None


def test_without_the_operators_namespace_pods_read_the_secret_by_its_own_name() -> None:
    defaults = DEFAULTS.__class__(storage=STORE)
    job = resolved(defaults=defaults)
    assert job.spec.storage.credentials_secret == "rlkd-s3-credentials"
    assert copied_secret(job, defaults) is None
    assert credentials_secret(job, defaults) == SecretRef("team-a", "rlkd-s3-credentials")


def test_the_copy_holds_the_pods_two_keys_as_data_and_is_owned_by_the_job() -> None:
    job = resolve_job(make_job({}).model_copy(update={"metadata": _with_uid()}), DEFAULTS)
    source = SecretRef("rlkd-system", "rlkd-s3-credentials")
    data = {
        "AWS_ACCESS_KEY_ID": "aWQ=",
        "AWS_SECRET_ACCESS_KEY": "a2V5",
        "rootPassword": "cm9vdA==",
    }
    copy = build_store_secret(job, source, data)
    assert copy["data"] == {"AWS_ACCESS_KEY_ID": "aWQ=", "AWS_SECRET_ACCESS_KEY": "a2V5"}
    assert "stringData" not in copy and copy["type"] == "Opaque"
    meta = copy["metadata"]
    assert (meta["name"], meta["namespace"]) == ("demo-store-credentials", "team-a")
    assert meta["annotations"] == {"rlkd.ai/copied-from": "rlkd-system/rlkd-s3-credentials"}
    assert meta["labels"]["rlkd.ai/job"] == "demo"
    assert meta["labels"]["app.kubernetes.io/component"] == "store"
    assert [o["uid"] for o in meta["ownerReferences"]] == ["uid-1"]
    assert build_store_secret(job, source, None)["data"] == {}


def _with_uid():
    job = make_job({})
    return job.metadata.model_copy(update={"uid": "uid-1"})
