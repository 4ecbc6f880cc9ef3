"""Reading a job's examples: formats, places, the spec's selection, column errors."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest

from rlkd.data import Example, examples, read_records, select
from rlkd.errors import DatasetError, ObjectNotFoundError
from rlkd.spec.job import DatasetSpec
from rlkd.store import Store
from tests.jobs import make_job

ROWS = [
    {"problem": f"p{i}", "answer": str(i), "teacher_reasoning": f"t{i}", "level": "math"}
    for i in range(10)
]


def jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n\n"


def parquet(rows: list[dict]) -> bytes:
    out = io.BytesIO()
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows), out)
    return out.getvalue()


def test_one_jsonl_file_in_the_store(store: Store) -> None:
    store.put_bytes("datasets/math.jsonl", jsonl(ROWS))
    records = read_records("store://datasets/math.jsonl", store=store, open_bucket=None)
    assert records == ROWS


def test_every_file_under_a_prefix_in_key_order(store: Store) -> None:
    store.put_bytes("datasets/math/part-1.parquet", parquet(ROWS[5:]))
    store.put_bytes("datasets/math/part-0.jsonl", jsonl(ROWS[:5]))
    store.put_bytes("datasets/math/README.md", b"not data")
    assert read_records("store://datasets/math/", store=store, open_bucket=None) == ROWS


def test_an_s3_uri_goes_through_the_bucket_opener(store: Store) -> None:
    store.put_bytes("train.jsonl", jsonl(ROWS[:2]))
    opened: list[str] = []

    def open_bucket(bucket: str) -> Store:
        opened.append(bucket)
        return store

    records = read_records("s3://data-bucket/train.jsonl", store=None, open_bucket=open_bucket)
    assert records == ROWS[:2] and opened == ["data-bucket"]


def test_a_local_directory(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_bytes(jsonl(ROWS[:3]))
    (tmp_path / "b.parquet").write_bytes(parquet(ROWS[3:]))
    assert read_records(str(tmp_path), store=None, open_bucket=None) == ROWS


@pytest.mark.parametrize(
    ("uri", "content", "message"),
    [
        ("store://d.jsonl", b'{"a": 1}\n{oops\n', "store://d.jsonl: line 2: invalid JSON"),
        ("store://d.jsonl", b"[1, 2]\n", "line 1: not a JSON object"),
        ("store://d.parquet", b"not parquet", "not a readable Parquet file"),
        ("store://empty/", None, "no .jsonl or .parquet file at store://empty/"),
    ],
)
def test_unreadable_datasets_are_dataset_errors(
    store: Store, uri: str, content: bytes | None, message: str
) -> None:
    if content is not None:
        store.put_bytes(uri.removeprefix("store://"), content)
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_records(uri, store=store, open_bucket=None)


def test_a_missing_file_names_the_object(store: Store) -> None:
    with pytest.raises(ObjectNotFoundError, match=re.escape("no object at")):
        read_records("store://missing.jsonl", store=store, open_bucket=None)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("store://d.jsonl", "a store:// dataset needs a store"),
        ("s3://bucket/d.jsonl", "an s3:// dataset needs spec.storage"),
    ],
)
def test_references_without_their_store(uri: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_records(uri, store=None, open_bucket=None)


@pytest.mark.parametrize(
    ("selection", "count"),
    [
        ({}, 10),
        ({"limit": 3}, 3),
        ({"limit": 30}, 10),
        ({"fraction": 0.25}, 2),
        ({"fraction": 0.01}, 1),
    ],
)
def test_select_shuffles_with_the_seed_then_cuts(selection: dict, count: int) -> None:
    dataset = DatasetSpec(uri="store://d.jsonl", **selection)
    chosen = select(ROWS, dataset)
    assert len(chosen) == count
    assert chosen == select(ROWS, dataset)  # the same rows in every phase
    assert sorted(map(json.dumps, select(ROWS, DatasetSpec(uri="store://d.jsonl")))) == sorted(
        map(json.dumps, ROWS)
    )
    assert select(ROWS, DatasetSpec(uri="store://d.jsonl", seed=1)) != select(
        ROWS, DatasetSpec(uri="store://d.jsonl", seed=2)
    )


def test_examples_read_the_columns_the_spec_names() -> None:
    job = make_job({"dataset": {"columns": {"teacherReasoning": "r1", "domain": "level"}}})
    rows = [{"problem": "p", "answer": "4", "r1": "because", "level": "puzzle"}]
    assert examples(rows, job.spec) == [Example("p", "4", "because", "puzzle")]


def test_a_model_teacher_needs_no_teacher_column() -> None:
    job = make_job({"teacher": {"source": "model", "model": {"model": "org/teacher"}}})
    [example] = examples([{"problem": "p", "answer": "1"}], job.spec)
    assert example.teacher == ""


@pytest.mark.parametrize(
    ("spec", "row", "message"),
    [
        ({}, {"problem": "p", "answer": "1"}, "row 0 has no column 'teacher_reasoning' "),
        (
            {"teacher": {"source": "decompositions"}},
            {"problem": "p", "answer": "1"},
            "spec.dataset.columns.teacherDecomposition); its columns: answer, problem",
        ),
        ({}, {"problem": "p", "answer": 1, "teacher_reasoning": "t"}, "holds int, not text"),
        (
            {"dataset": {"columns": {"domain": "level"}}},
            {"problem": "p", "answer": "1", "teacher_reasoning": "t", "level": "art"},
            "holds the domain 'art'; use one of code, math, puzzle, science",
        ),
    ],
)
def test_rows_that_do_not_fit_the_spec(spec: dict, row: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)):
        examples([row], make_job(spec).spec)
