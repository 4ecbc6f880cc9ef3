"""Pure parts of the store: key rules, S3 settings, credentials, canonical JSON and cache keys.
No server and no S3 client."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlkd.errors import StoreError
from rlkd.spec.refs import s3_bucket_problems
from rlkd.store import Credentials, S3Config, cache_key, validate_key
from rlkd.store.base import encode_json, validate_prefix
from rlkd.store.config import parse_endpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "runs/job-1/model.safetensors",
        "cache/decompose/0f.json",
        ".hidden/x",
        "..x/y..",
        "ünïcode/ключ.json",
        "with space/and+plus=eq",
    ],
)
def test_valid_keys_pass_unchanged(key):
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/abs/path", "starts with '/'"),
        ("a//b", "empty segment"),
        ("a/", "empty segment"),
        ("../escape", "'..' segment"),
        ("a/../../b", "'..' segment"),
        ("a/./b", "'.' segment"),
        (".", "'.' segment"),
        ("a\\b", "backslash"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a/b.json.123.rlkd-tmp", "reserved for temp files"),
        (b"bytes", "not a string"),
    ],
)
def test_invalid_keys_name_the_key_and_the_rule(key, reason):
    with pytest.raises(StoreError) as err:
        validate_key(key)
    message = str(err.value)
    assert repr(key) in message
    assert reason in message
    assert "relative POSIX path" in message
    assert "\n" not in message


@pytest.mark.parametrize("prefix", ["", "a", "a/", "runs/job-1/", "ab"])
def test_valid_prefixes(prefix):
    assert validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["/", "a//", "../", "/a/", "a/./"])
def test_invalid_prefixes(prefix):
    with pytest.raises(StoreError, match="invalid store prefix"):
        validate_prefix(prefix)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("rlkd-artifacts", None),
        ("a.b-c.123", None),
        ("abc", None),
        ("x" * 63, None),
        ("ab", "3 to 63 characters"),
        ("x" * 64, "3 to 63 characters"),
        ("My-Bucket", "lowercase letters"),
        ("under_score", "lowercase letters"),
        ("-start", "start and end"),
        ("end.", "start and end"),
        ("a..b", "adjacent dots"),
        ("192.168.1.10", "IP address"),
    ],
)
def test_bucket_name_rules(name, problem):
    problems = s3_bucket_problems(name)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_bucket_name_reports_every_problem_at_once():
    assert len(s3_bucket_problems("_A")) == 3


@pytest.mark.parametrize(
    ("endpoint", "netloc", "secure"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1:9000", False),
        ("https://s3.amazonaws.com", "s3.amazonaws.com", True),
        ("https://minio.example:443/", "minio.example:443", True),
        ("http://[::1]:8333", "[::1]:8333", False),
    ],
)
def test_parse_endpoint(endpoint, netloc, secure):
    assert parse_endpoint(endpoint) == (netloc, secure)


@pytest.mark.parametrize(
    "endpoint",
    [
        "localhost:9000",
        "minio:9000",
        "ftp://host",
        "http://",
        "http://host:notaport",
        "http://host:9000/bucket",
        "http://host?x=1",
        "",
    ],
)
def test_malformed_endpoint_is_a_store_error_with_an_example(endpoint):
    with pytest.raises(StoreError, match="not a URL like http://host:port or https://host"):
        parse_endpoint(endpoint)


def _config(**overrides: object) -> S3Config:
    fields: dict = {
        "endpoint": "http://127.0.0.1:9000",
        "bucket": "rlkd",
        "credentials": Credentials("AK", "SK"),
    }
    return S3Config(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("prefix", "key_prefix", "uri"),
    [
        ("", "", "s3://rlkd"),
        ("runs", "runs/", "s3://rlkd/runs"),
        ("runs/job-1/", "runs/job-1/", "s3://rlkd/runs/job-1"),
    ],
)
def test_s3_config_prefix_and_uri(prefix, key_prefix, uri):
    config = _config(prefix=prefix)
    assert (config.key_prefix, config.uri) == (key_prefix, uri)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"endpoint": "minio:9000"}, "not a URL"),
        ({"bucket": "Bad_Bucket"}, "bucket 'Bad_Bucket' may hold only lowercase"),
        ({"prefix": "/runs"}, "prefix '/runs'"),
        ({"prefix": "a//b"}, "empty segment"),
    ],
)
def test_s3_config_rejects_bad_settings(overrides, expected):
    with pytest.raises(StoreError, match=expected):
        _config(**overrides)


def test_credentials_repr_hides_the_secret():
    creds = Credentials("AKIAEXAMPLE", "super-secret-value")
    assert "super-secret-value" not in repr(creds)
    assert "super-secret-value" not in repr(_config(credentials=creds))
    assert "AKIAEXAMPLE" in repr(creds)


def test_credentials_from_env():
    env = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}
    assert Credentials.from_env(env) == Credentials("AK", "SK")


def test_credentials_from_secret_dir_win_over_env(tmp_path):
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("file-ak\n")
    (tmp_path / "AWS_SECRET_ACCESS_KEY").write_text("file-sk\n")
    env = {"AWS_ACCESS_KEY_ID": "env-ak", "AWS_SECRET_ACCESS_KEY": "env-sk"}
    assert Credentials.from_env(env, secret_dir=tmp_path) == Credentials("file-ak", "file-sk")


def test_credentials_fall_back_to_env_when_secret_dir_is_absent(tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "env-ak", "AWS_SECRET_ACCESS_KEY": "env-sk"}
    creds = Credentials.from_env(env, secret_dir=tmp_path / "not-mounted")
    assert creds == Credentials("env-ak", "env-sk")


@pytest.mark.parametrize(
    "env", [{}, {"AWS_ACCESS_KEY_ID": ""}, {"AWS_SECRET_ACCESS_KEY": "only-the-secret"}]
)
def test_missing_credentials_name_both_variables(env):
    with pytest.raises(StoreError) as err:
        Credentials.from_env(env)
    message = str(err.value)
    assert "AWS_ACCESS_KEY_ID" in message
    assert "AWS_SECRET_ACCESS_KEY" in message
    assert "only-the-secret" not in message


def test_incomplete_secret_dir_names_the_dir(tmp_path):
    (tmp_path / "AWS_ACCESS_KEY_ID").write_text("ak")
    with pytest.raises(
        StoreError,
        match=re.escape(f"AWS_SECRET_ACCESS_KEY not set in the Secret mounted at {tmp_path}"),
    ):
        Credentials.from_env({}, secret_dir=tmp_path)


def test_json_encoding_is_canonical():
    assert encode_json({"b": [1, 2], "a": "é"}, "x") == '{"a":"é","b":[1,2]}'.encode()
    assert encode_json({"a": 1, "b": 2}, "x") == encode_json({"b": 2, "a": 1}, "x")


@pytest.mark.parametrize("doc", [{"x": float("nan")}, {"x": object()}, {(1, 2): 3}])
def test_unencodable_json_is_a_store_error_naming_the_uri(doc):
    with pytest.raises(StoreError, match=re.escape("cannot write s3://b/k.json as JSON")):
        encode_json(doc, "s3://b/k.json")


def test_cache_key_is_content_addressed():
    key = cache_key({"model": "m", "prompt": "p"}, 3)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key == cache_key({"prompt": "p", "model": "m"}, 3)
    assert key != cache_key({"model": "m", "prompt": "p"}, 4)
    assert cache_key("a", "b") != cache_key("ab")


def test_importing_the_store_does_not_import_minio():
    code = "import sys, rlkd.store; assert 'minio' not in sys.modules, 'minio imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
