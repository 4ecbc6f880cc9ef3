"""The operator's store reads against a hung endpoint (it accepts connections and never answers)
and a real S3 server: each read is one bounded try, and a dead endpoint delays no other."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from rlkd.k8s import OperatorDefaults
from rlkd.k8s.store_secret import SecretRef
from rlkd.spec.resource import RLKDJob
from rlkd.store import Credentials, S3Config
from rlkd.store.s3 import S3Store
from rlkd_operator.decide import Needs, resolve
from rlkd_operator.stores import Stores
from tests.kube_emulator import wait_for
from tests.operator_fixtures import STORAGE, job_body
from tests.s3server import S3Server, hung_endpoint

pytestmark = pytest.mark.s3
CHECK = Needs(store_check=True, progress=False)


def job_on(endpoint: str, name: str, bucket: str = "rlkd-test") -> RLKDJob:
    job = resolve(
        job_body(name, storage={**STORAGE, "endpoint": endpoint, "bucket": bucket}),
        OperatorDefaults(),
    )
    assert isinstance(job, RLKDJob)
    return job


@pytest.fixture
def stores_for(s3_server: S3Server):
    """Stores(...) that get the test server's keys from any Secret; closed after the test."""
    made: list[Stores] = []

    async def keys(secret: SecretRef, what: str) -> Credentials:
        return s3_server.credentials

    def make(**options: float) -> Stores:
        made.append(Stores(keys, OperatorDefaults(), **options))
        return made[-1]

    yield make
    for stores in made:
        stores.close()


async def test_a_hung_store_is_one_try_reported_as_a_timeout_then_left_alone(stores_for) -> None:
    stores = stores_for(timeout=0.2, retry_after=3600)
    with hung_endpoint() as hung:
        check = (await stores.observe(job_on(hung.endpoint, "a"), CHECK)).check
        assert check is not None and (check.ready, check.reason) == (False, "StoreUnavailable")
        assert "timed out" in check.message and hung.endpoint in check.message
        await wait_for(lambda: hung.accepted)
        assert hung.accepted == 1  # no retry
    # Nothing listens there now, so a new try would be refused: this answer is the one known.
    check = (await stores.observe(job_on(hung.endpoint, "b"), CHECK)).check
    assert check is not None and "timed out" in check.message


async def test_a_store_that_did_not_answer_is_one_warning_per_try(stores_for, caplog) -> None:
    """The reads refused meanwhile (the same job's GSRM build, other jobs) log no warning
    each: the status says it, and the log says it once."""
    stores = stores_for(timeout=0.2, retry_after=3600)
    with hung_endpoint() as hung, caplog.at_level("DEBUG", logger="rlkd.operator"):
        job = job_on(hung.endpoint, "a")
        await stores.observe(job, CHECK)
        assert await stores.gsrm_build(job, reports=False) is None
        await stores.observe(job_on(hung.endpoint, "b"), CHECK)
    levels = [r.levelname for r in caplog.records if "store of RLKDJob" in r.getMessage()]
    assert levels == ["WARNING", "DEBUG", "DEBUG"]


async def test_a_dead_endpoint_never_holds_every_reader(stores_for, s3_server: S3Server) -> None:
    stores = stores_for(timeout=3600, retry_after=3600, readers=2)  # reads outlast the test
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    config = S3Config(endpoint=s3_server.endpoint, bucket=bucket, credentials=s3_server.credentials)
    S3Store(config).put_bytes("rlkd/datasets/train.jsonl", b"{}\n")
    with hung_endpoint() as hung:
        stuck = [
            asyncio.create_task(stores.observe(job_on(hung.endpoint, f"stuck-{i}"), CHECK))
            for i in range(3)
        ]
        await wait_for(lambda: hung.accepted)
        fine = stores.observe(job_on(s3_server.endpoint, "fine", bucket), CHECK)
        check = (await asyncio.wait_for(fine, 30)).check
        assert check is not None and check.ready
        assert hung.hanging == 1 and not any(task.done() for task in stuck)
    # The endpoint closed its connections: the read that waited fails, the others with it.
    for task in stuck:
        check = (await task).check
        assert check is not None and (check.ready, check.reason) == (False, "StoreUnavailable")
