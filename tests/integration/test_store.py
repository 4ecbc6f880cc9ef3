"""The Store contract, run against both backends (`store` is parametrised over a local
directory and a real S3 server), plus the S3 failure modes a user can hit."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from minio import Minio

from rlkd.errors import ObjectNotFoundError, StoreError
from rlkd.store import Credentials, LocalStore, S3Config, Store, cache_key, cached_json
from rlkd.store.base import TMP_SUFFIX
from rlkd.store.s3 import MIN_PART_SIZE, S3Store
from tests.s3server import S3Server, free_ports

BIG_FILE_BYTES = 20_000_000  # four 5 MiB parts on S3


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "weights.bin"
    path.write_bytes(os.urandom(BIG_FILE_BYTES))
    return path


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def test_store_satisfies_the_protocol(store):
    assert isinstance(store, Store)
    assert store.uri_for("a/b.json") == f"{store.uri}/a/b.json"


def test_bytes_round_trip(store):
    store.put_bytes("blobs/one.bin", b"\x00\x01binary\xff")
    store.put_bytes("blobs/empty", b"")
    store.put_bytes("ünï/ключ", b"unicode key")
    assert store.get_bytes("blobs/one.bin") == b"\x00\x01binary\xff"
    assert store.get_bytes("blobs/empty") == b""
    assert store.get_bytes("ünï/ключ") == b"unicode key"
    store.put_bytes("blobs/one.bin", b"overwritten")
    assert store.get_bytes("blobs/one.bin") == b"overwritten"


def test_json_round_trip_is_canonical(store):
    doc = {"step": 3, "reward": 0.25, "tags": ["<think>", "é"], "nested": {"b": None, "a": True}}
    store.put_json("progress.json", doc)
    assert store.get_json("progress.json") == doc
    assert store.get_bytes("progress.json") == json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def test_corrupt_json_is_a_store_error_naming_the_uri(store):
    store.put_bytes("broken.json", b'{"half": ')
    with pytest.raises(
        StoreError, match=re.escape(f"{store.uri_for('broken.json')} is not a valid")
    ):
        store.get_json("broken.json")


def test_large_file_round_trip(store, big_file, tmp_path):
    store.put_file("checkpoints/step-1/weights.bin", big_file)
    out = tmp_path / "download" / "weights.bin"
    store.get_file("checkpoints/step-1/weights.bin", out)
    assert _sha256(out) == _sha256(big_file)
    assert os.listdir(out.parent) == ["weights.bin"]  # no temp file left beside it


@pytest.mark.s3
def test_large_file_goes_up_as_a_multipart_upload(s3_config, big_file):
    store = S3Store(s3_config, part_size=MIN_PART_SIZE)
    store.put_file("weights.bin", big_file)
    creds = s3_config.credentials
    client = Minio(
        s3_config.endpoint.removeprefix("http://"),
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        secure=False,
    )
    stat = client.stat_object(s3_config.bucket, s3_config.key_prefix + "weights.bin")
    assert stat.size == BIG_FILE_BYTES
    assert stat.etag.endswith("-4")  # S3 marks a multipart object's ETag with its part count


def test_list_is_recursive_sorted_and_respects_prefix_boundaries(store):
    keys = ["a/x", "a/b/c/d.json", "a/b/a", "ab/x", "abc", "b", "a.json"]
    for key in keys:
        store.put_bytes(key, key.encode())
    assert store.list() == sorted(keys)
    assert store.list("a/") == ["a/b/a", "a/b/c/d.json", "a/x"]
    assert store.list("a/b/") == ["a/b/a", "a/b/c/d.json"]
    assert store.list("a/b/c") == ["a/b/c/d.json"]
    assert store.list("ab/") == ["ab/x"]
    # A prefix without '/' is a plain string prefix, as in S3.
    assert store.list("ab") == ["ab/x", "abc"]
    assert store.list("missing/") == []
    assert store.list("a/x/") == []


def test_writes_leave_no_temp_files_behind(store, tmp_path):
    store.put_json("state.json", {"n": 1})
    store.put_file("file.bin", _write(tmp_path / "src", b"data"))
    assert store.list() == ["file.bin", "state.json"]
    if isinstance(store, LocalStore):
        assert not [p for p in store.root.rglob("*") if p.name.endswith(TMP_SUFFIX)]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_exists_and_delete(store):
    assert not store.exists("a/b")
    store.put_bytes("a/b", b"1")
    assert store.exists("a/b")
    assert not store.exists("a")  # a prefix of keys is not an object
    store.delete("a/b")
    assert not store.exists("a/b")
    assert store.list() == []
    store.delete("a/b")  # absent: no error
    store.delete("never/was")


def test_missing_object_is_object_not_found_with_its_uri(store, tmp_path):
    uri = store.uri_for("nope/missing.json")
    for read in (store.get_bytes, store.get_json):
        with pytest.raises(ObjectNotFoundError, match=f"^{re.escape(f'no object at {uri}')}$"):
            read("nope/missing.json")
    out = tmp_path / "out" / "missing.json"
    with pytest.raises(KeyError):  # also a KeyError, for dict-like callers
        store.get_file("nope/missing.json", out)
    assert list(tmp_path.rglob("*missing*")) == []  # neither the file nor a temp file


@pytest.mark.parametrize("key", ["../outside", "/etc/passwd", "a//b", "a\\b", ""])
def test_invalid_keys_are_rejected_by_every_operation(store, key, tmp_path):
    src = _write(tmp_path / "src", b"x")
    operations = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.put_json(key, {}),
        lambda: store.get_json(key),
        lambda: store.put_file(key, src),
        lambda: store.get_file(key, tmp_path / "dst"),
        lambda: store.exists(key),
        lambda: store.delete(key),
        lambda: store.uri_for(key),
    ]
    for operation in operations:
        with pytest.raises(StoreError, match="invalid store key"):
            operation()
    assert store.list() == []


def test_local_store_never_writes_outside_its_root(tmp_path):
    store = LocalStore(tmp_path / "root")
    (tmp_path / "outside").mkdir()
    (store.root / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(StoreError, match="outside the store root"):
        store.put_bytes("link/escaped", b"x")
    assert list((tmp_path / "outside").iterdir()) == []


def test_local_files_honour_the_umask(tmp_path):
    store = LocalStore(tmp_path / "root")
    old = os.umask(0o022)
    try:
        store.put_bytes("shared/weights.bin", b"x")
        store.get_file("shared/weights.bin", tmp_path / "copy")
    finally:
        os.umask(old)
    for path in (store.root / "shared" / "weights.bin", tmp_path / "copy"):
        assert path.stat().st_mode & 0o777 == 0o644  # readable by other users, as with open()


def test_concurrent_writers_never_expose_half_a_document(store):
    key = "progress/state.json"
    writers, docs_per_writer, readers = 4, 12, 2

    def doc(writer: int, seq: int) -> dict:
        # ~40 KB, so a torn read would show up as invalid JSON or a mixed payload.
        return {"writer": writer, "seq": seq, "payload": [writer * 1000 + seq] * 8000}

    first = doc(-1, 0)
    store.put_json(key, first)
    written = [doc(w, s) for w in range(writers) for s in range(docs_per_writer)]
    valid = {json.dumps(d, sort_keys=True) for d in [first, *written]}
    done = threading.Event()
    reads: list[dict] = []

    def read_until_done() -> None:
        while True:
            reads.append(store.get_json(key))
            if done.is_set():
                return

    def write(writer: int) -> None:
        for seq in range(docs_per_writer):
            store.put_json(key, doc(writer, seq))

    with ThreadPoolExecutor(writers + readers) as pool:
        reader_futures = [pool.submit(read_until_done) for _ in range(readers)]
        for future in [pool.submit(write, w) for w in range(writers)]:
            future.result()
        done.set()
        for future in reader_futures:
            future.result()

    assert reads
    assert all(json.dumps(r, sort_keys=True) in valid for r in reads)
    final = store.get_json(key)
    assert final in written


def test_cached_json_computes_once_then_hits(store):
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"steps": ("parse", "solve"), "score": 0.5}

    inputs = {"teacher": "qwen", "prompt": "2+2?"}
    first = cached_json(store, "decompose", inputs, compute)
    again = cached_json(store, "decompose", {"prompt": "2+2?", "teacher": "qwen"}, compute)
    assert first == again == {"steps": ["parse", "solve"], "score": 0.5}
    assert len(calls) == 1
    assert store.list("cache/") == [f"cache/decompose/{cache_key(inputs)}.json"]
    cached_json(store, "decompose", {**inputs, "prompt": "3+3?"}, compute)
    assert len(calls) == 2


def test_cached_json_rejects_a_bad_namespace(store):
    with pytest.raises(StoreError, match=re.escape("invalid cache namespace '../x'")):
        cached_json(store, "../x", {}, dict)


@pytest.mark.s3
def test_s3_store_at_the_bucket_root(s3_server: S3Server):
    config = S3Config(
        endpoint=s3_server.endpoint, bucket="root-prefix-test", credentials=s3_server.credentials
    )
    store = S3Store(config)
    store.put_bytes("top.txt", b"x")
    assert store.uri == "s3://root-prefix-test"
    assert store.uri_for("top.txt") == "s3://root-prefix-test/top.txt"
    assert store.list() == ["top.txt"]


@pytest.mark.s3
def test_reopening_an_existing_bucket_keeps_its_objects(s3_config):
    S3Store(s3_config).put_bytes("kept", b"1")
    assert S3Store(s3_config, create_bucket=False).get_bytes("kept") == b"1"


def test_unreachable_endpoint_is_a_store_error_naming_it():
    (port,) = free_ports(1)  # nothing listens there once the probe socket closes
    endpoint = f"http://127.0.0.1:{port}"
    config = S3Config(endpoint=endpoint, bucket="rlkd", credentials=Credentials("a", "b"))
    with pytest.raises(StoreError) as err:
        S3Store(config)
    message = str(err.value)
    assert f"cannot reach S3 endpoint {endpoint}" in message
    assert "spec.storage.endpoint" in message
    assert "\n" not in message


@pytest.mark.s3
@pytest.mark.parametrize(
    ("access_key", "code"),
    [("rlkd-test-access", "SignatureDoesNotMatch"), ("no-such-user", "InvalidAccessKeyId")],
)
def test_bad_credentials_are_a_store_error_without_the_keys(s3_server, access_key, code):
    wrong_secret = "wrong-secret-do-not-print-me"
    config = S3Config(
        endpoint=s3_server.endpoint,
        bucket="rlkd-creds",
        credentials=Credentials(access_key, wrong_secret),
    )
    with pytest.raises(StoreError) as err:
        S3Store(config)
    message = str(err.value)
    assert not isinstance(err.value, ObjectNotFoundError)
    # Both keys come from the user's Secret; the message goes into status, Events and logs.
    assert wrong_secret not in message and access_key not in message
    assert s3_server.endpoint in message
    assert "AWS_ACCESS_KEY_ID" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert code in message


@pytest.mark.s3
def test_missing_bucket_without_create_is_object_not_found(s3_config):
    with pytest.raises(ObjectNotFoundError) as err:
        S3Store(s3_config, create_bucket=False)
    message = str(err.value)
    assert f"bucket {s3_config.bucket!r} does not exist at {s3_config.endpoint}" in message
    assert "create" in message


@pytest.mark.s3
def test_bucket_removed_under_an_open_store_is_not_a_missing_key(s3_config, s3_server):
    store = S3Store(s3_config)
    client = Minio(
        s3_server.endpoint.removeprefix("http://"),
        access_key=s3_server.credentials.access_key,
        secret_key=s3_server.credentials.secret_key,
        secure=False,
    )
    client.remove_bucket(s3_config.bucket)
    with pytest.raises(ObjectNotFoundError, match=f"bucket {s3_config.bucket!r} does not exist"):
        store.exists("model.bin")


def test_local_store_cannot_hold_an_object_and_keys_below_it(tmp_path):
    store = LocalStore(tmp_path / "store")
    store.put_bytes("a", b"1")
    with pytest.raises(StoreError, match="the store already holds 'a', and a local store cannot"):
        store.put_bytes("a/b", b"2")
    store.put_bytes("c/d", b"3")
    with pytest.raises(StoreError, match="the store already holds keys below 'c'"):
        store.put_bytes("c", b"4")
    assert store.list() == ["a", "c/d"]


class _NotS3(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>not here</html>")

    do_HEAD = do_PUT = do_GET

    def log_message(self, *args):
        pass


def test_endpoint_that_is_not_s3_is_a_store_error():
    server = HTTPServer(("127.0.0.1", 0), _NotS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        config = S3Config(endpoint=endpoint, bucket="rlkd", credentials=Credentials("a", "b"))
        with pytest.raises(
            StoreError, match=re.escape(f"{endpoint} did not answer like an S3 server")
        ):
            S3Store(config)
    finally:
        server.shutdown()
        server.server_close()
