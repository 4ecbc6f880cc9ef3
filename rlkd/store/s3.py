"""A Store in an S3 bucket through the minio SDK, using only plain S3 calls so it works with
AWS S3, MinIO, SeaweedFS and Ceph. Every SDK and network error is translated here."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from rlkd.errors import ObjectNotFoundError, StoreError, StoreUnreachableError
from rlkd.store.base import StoreBase, atomic_output, os_error_message, validate_prefix
from rlkd.store.config import ACCESS_KEY_VAR, SECRET_KEY_VAR, S3Config, parse_endpoint

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # the S3 minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MIB
DEFAULT_PART_SIZE = 16 * MIB  # 10,000 parts (the S3 limit) of 16 MiB: objects up to ~156 GiB

_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"})


RETRIES = urllib3.Retry(
    total=2,
    connect=1,
    read=1,
    backoff_factor=0.2,
    status_forcelist=(500, 502, 503, 504),
    raise_on_status=False,
)
"""A few retries for the learner and the CLI: final 5xx answers are returned so minio reports
them."""


def http_client(
    *, connect: float = 5.0, read: float = 60.0, retries: urllib3.Retry | bool = RETRIES
) -> urllib3.PoolManager:
    """The HTTP client of S3Stores: a short connect timeout and few retries, so a wrong endpoint
    fails in seconds (minio's default waits minutes). `read` bounds each wait for the server's
    bytes; `retries=False` makes every request a single try (the operator's reads)."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect, read=read),
        retries=retries,
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )


class S3Store(StoreBase):
    """Objects live at `s3://bucket/prefix/<key>`; a single PUT (or a completed multipart
    upload) is atomic in S3, so every write is atomic for readers."""

    def __init__(
        self,
        config: S3Config,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        create_bucket: bool = True,
        http: urllib3.PoolManager | None = None,
    ) -> None:
        """`http`: the HTTP client (http_client()), shared by stores that want the same
        timeouts and retries; a new default one when None."""
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise StoreError(
                f"S3 part size {part_size} is out of range; S3 needs 5 MiB ({MIN_PART_SIZE}) "
                f"to 5 GiB ({MAX_PART_SIZE})"
            )
        self.config = config
        self.uri = config.uri
        self._part_size = part_size
        netloc, secure = parse_endpoint(config.endpoint)
        self._client = Minio(
            netloc,
            access_key=config.credentials.access_key,
            secret_key=config.credentials.secret_key,
            secure=secure,
            region=config.region,
            http_client=http or http_client(),
        )
        self._ensure_bucket(create_bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(self.uri_for(key)):
            self._client.put_object(
                self.config.bucket,
                self._name(key),
                io.BytesIO(data),
                len(data),
                part_size=self._part_size,
            )

    def get_bytes(self, key: str) -> bytes:
        with self._errors(self.uri_for(key)):
            response = self._client.get_object(self.config.bucket, self._name(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

    def put_file(self, key: str, path: str | Path) -> None:
        with self._errors(self.uri_for(key)):
            self._client.fput_object(
                self.config.bucket, self._name(key), str(path), part_size=self._part_size
            )

    def get_file(self, key: str, path: str | Path) -> None:
        # minio's fget_object leaves its part file behind on failure; atomic_output does not.
        with self._errors(self.uri_for(key)):
            response = self._client.get_object(self.config.bucket, self._name(key))
            try:
                with atomic_output(Path(path)) as out:
                    for chunk in response.stream(MIB):
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()

    def list(self, prefix: str = "") -> list[str]:
        start = self.config.key_prefix
        with self._errors(f"{self.uri}/{validate_prefix(prefix)}"):
            names = [
                obj.object_name
                for obj in self._client.list_objects(
                    self.config.bucket, prefix=start + prefix, recursive=True
                )
            ]
        # Names ending in '/' are directory markers made by other tools, not objects.
        return sorted(n.removeprefix(start) for n in names if n and not n.endswith("/"))

    def exists(self, key: str) -> bool:
        with self._errors(self.uri_for(key)):
            try:
                self._client.stat_object(self.config.bucket, self._name(key))
            except S3Error as exc:
                if exc.code != "NoSuchKey":
                    raise
                # A HEAD answers 404 for a missing bucket too: tell the two apart.
                if not self._client.bucket_exists(self.config.bucket):
                    raise self._no_bucket(self.uri_for(key)) from exc
                return False
            return True

    def delete(self, key: str) -> None:
        with self._errors(self.uri_for(key)):
            self._client.remove_object(self.config.bucket, self._name(key))

    def _name(self, key: str) -> str:
        return self.config.key_prefix + key

    def _ensure_bucket(self, create: bool) -> None:
        with self._errors(self.uri):
            if self._client.bucket_exists(self.config.bucket):
                return
            if not create:
                raise self._no_bucket(self.uri)
            try:
                self._client.make_bucket(self.config.bucket, location=self.config.region)
            except S3Error as exc:
                if exc.code != "BucketAlreadyOwnedByYou":  # created meanwhile by a peer
                    raise

    def _no_bucket(self, uri: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(
            f"bucket {self.config.bucket!r} does not exist at {self.config.endpoint} (needed for "
            f"{uri}); create the bucket, or let rlkd create it (create_bucket=True)"
        )

    @contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Translate SDK, HTTP and file errors into one-line StoreErrors about `uri`."""
        endpoint = self.config.endpoint
        try:
            yield
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                raise self._no_bucket(uri) from exc
            if exc.code == "NoSuchKey":
                raise ObjectNotFoundError(f"no object at {uri}") from exc
            if exc.code in _CREDENTIAL_CODES:
                raise StoreError(
                    f"S3 endpoint {endpoint} refused access to {uri} ({exc.code}); check "
                    f"{ACCESS_KEY_VAR} and {SECRET_KEY_VAR} (environment variables or keys of "
                    "the storage Secret) and that this key may use the bucket"
                ) from exc
            raise StoreError(
                f"S3 endpoint {endpoint} failed on {uri}: {exc.code}: {exc.message}"
            ) from exc
        except ServerError as exc:
            raise StoreError(
                f"S3 endpoint {endpoint} answered HTTP {exc.status_code} for {uri}; check the "
                "server's health and logs, then retry"
            ) from exc
        except InvalidResponseError as exc:
            raise StoreError(
                f"{endpoint} did not answer like an S3 server for {uri}; check that "
                "spec.storage.endpoint is the URL of the S3 API"
            ) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StoreUnreachableError(
                f"cannot reach S3 endpoint {endpoint} ({_reason(exc)}); check "
                "spec.storage.endpoint and that the S3 server is running"
            ) from exc
        except OSError as exc:
            raise StoreError(os_error_message(uri, exc)) from exc


def _reason(exc: urllib3.exceptions.HTTPError) -> str:
    """The innermost cause of a network failure, without urllib3's object reprs."""
    reason = getattr(exc, "reason", None) or exc
    return str(reason).rpartition(": ")[2] or type(reason).__name__
