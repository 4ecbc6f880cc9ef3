"""The examples a job trains on, read from where `spec.dataset.uri` points and selected as the
spec says (shuffled with `seed`, then cut by `limit` or `fraction`), in one place, so every
phase that reads them (prepare, train, evaluation) sees the same rows in the same order.

Formats: JSON Lines (`.jsonl`) and Parquet (`.parquet`), one file or every such file under a
prefix; a hub id is read with `datasets` (network, in the learner image); `toy://name` is the
shipped toy domain (rlkd.toy), generated on first use and cached in the store.
"""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlkd.errors import DatasetError, StoreError
from rlkd.spec.job import DatasetSpec, Domain, EvaluationSpec, RLKDJobSpec, domain_of
from rlkd.spec.refs import S3_SCHEME, STORE_SCHEME, TOY_SCHEME
from rlkd.store.base import Store
from rlkd.store.job import BucketOpener, JobStores

SUFFIXES = (".jsonl", ".parquet")

Record = dict[str, Any]
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Example:
    """One training problem with what the rewards need of it."""

    problem: str
    answer: str
    teacher: str
    """The teacher's reasoning (teacher.source dataset) or its decomposition (decompositions);
    "" when a teacher model samples it (teacher.source model)."""
    domain: Domain


def read_records(
    uri: str, *, store: Store | None, open_bucket: BucketOpener | None, split: str = "train"
) -> list[Record]:
    """Every record at `uri`: `store://path` in `store` (the job's store, at storage.prefix),
    `s3://bucket/key` through `open_bucket`, an absolute path on this machine, else a hub id."""
    if uri.startswith(STORE_SCHEME):
        if store is None:
            raise DatasetError(f"{uri}: a store:// dataset needs a store (spec.storage)")
        return _read_store(store, uri.removeprefix(STORE_SCHEME), uri)
    if uri.startswith(S3_SCHEME):
        bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
        if open_bucket is None:
            raise DatasetError(f"{uri}: an s3:// dataset needs spec.storage (its endpoint)")
        return _read_store(open_bucket(bucket), key, uri)
    if uri.startswith("/"):
        return _read_local(Path(uri))
    if uri.startswith(TOY_SCHEME):
        from rlkd.toy import toy_records

        return toy_records(uri.removeprefix(TOY_SCHEME), store)
    return _read_hub(uri, split)


def read_dataset(spec: RLKDJobSpec, stores: JobStores) -> list[Record]:
    """Every record of the job's dataset (before selection)."""
    dataset = spec.dataset
    records = read_records(
        dataset.uri, store=stores.shared, open_bucket=stores.open_bucket, split=dataset.split
    )
    return _not_empty(records, dataset.uri, "spec.dataset.uri")


def _not_empty(records: list[Record], uri: str, field: str) -> list[Record]:
    if not records:
        raise DatasetError(f"{field}: the dataset at {uri} has no rows; point it at one that has")
    return records


def training_records(spec: RLKDJobSpec, stores: JobStores) -> list[Record]:
    """The records training uses (the spec's selection)."""
    return select(read_dataset(spec, stores), spec.dataset)


def evaluation_records(
    spec: RLKDJobSpec, stores: JobStores, evaluation: EvaluationSpec
) -> list[Record]:
    """The held-out problems of `evaluation`: its own dataset, or the rows of the training
    dataset that the selection left out; at most `evaluation.limit` of them."""
    if evaluation.uri is not None:
        records = read_records(
            evaluation.uri,
            store=stores.shared,
            open_bucket=stores.open_bucket,
            split=evaluation.split,
        )
        return _not_empty(records, evaluation.uri, "spec.evaluation.uri")[: evaluation.limit]
    rest = held_out(read_dataset(spec, stores), spec.dataset)
    if not rest:
        raise DatasetError(
            "spec.evaluation.uri: is empty and training uses every row of the dataset, so no "
            "row is held out: set spec.evaluation.uri, or spec.dataset.limit or fraction"
        )
    return rest[: evaluation.limit]


def select(records: Sequence[Record], dataset: DatasetSpec) -> list[Record]:
    """The records training uses: shuffled with `dataset.seed`, then the first `limit`, or the
    first `fraction` of them (at least one)."""
    order, chosen = _shuffled(records, dataset)
    return [records[i] for i in order[:chosen]]


def _shuffled(records: Sequence[Record], dataset: DatasetSpec) -> tuple[list[int], int]:
    """The records' order after shuffling with `dataset.seed`, and how many of the first ones
    training uses."""
    order = list(range(len(records)))
    random.Random(dataset.seed).shuffle(order)
    if dataset.limit is not None:
        return order, min(dataset.limit, len(order))
    if dataset.fraction is not None:
        return order, max(1, math.floor(len(order) * dataset.fraction))
    return order, len(order)


def held_out(records: Sequence[Record], dataset: DatasetSpec) -> list[Record]:
    """The records `select` leaves out, in the same shuffled order."""
    order, chosen = _shuffled(records, dataset)
    return [records[i] for i in order[chosen:]]


def examples(records: Sequence[Record], spec: RLKDJobSpec) -> list[Example]:
    """The records as Examples, reading the columns `spec.dataset.columns` names; a DatasetError
    names the first row and column that do not fit, and the spec field to fix."""
    columns = spec.dataset.columns
    teacher_column = {
        "dataset": (columns.teacher_reasoning, "teacherReasoning"),
        "decompositions": (columns.teacher_decomposition, "teacherDecomposition"),
    }.get(spec.teacher.source)
    out = []
    for row, record in enumerate(records):
        teacher = _text(record, row, *teacher_column) if teacher_column else ""
        if spec.teacher.source == "model":  # filled in by rlkd.prepare.with_teacher_paths
            teacher = str(record.get(columns.teacher_reasoning, ""))
        domain = spec.dataset.domain
        if columns.domain is not None:
            domain = domain_of(_text(record, row, columns.domain, "domain"), columns.domain)
        out.append(
            Example(
                problem=_text(record, row, columns.problem, "problem"),
                answer=_text(record, row, columns.answer, "answer"),
                teacher=teacher,
                domain=domain,
            )
        )
    return out


def prompt_messages(spec: RLKDJobSpec, problem: str) -> Messages:
    """What the student is asked, in training and in evaluation alike: the recipe's system
    prompt, then the problem."""
    return [
        {"role": "system", "content": spec.grpo.system_prompt},
        {"role": "user", "content": problem},
    ]


def _text(record: Record, row: int, column: str, field: str) -> str:
    if column not in record:
        have = ", ".join(sorted(record)) or "none"
        raise DatasetError(
            f"row {row} has no column {column!r} (spec.dataset.columns.{field}); its columns: "
            f"{have}. Rename the column or set spec.dataset.columns.{field}"
        )
    value = record[column]
    if not isinstance(value, str):
        raise DatasetError(
            f"row {row}, column {column!r} (spec.dataset.columns.{field}) holds "
            f"{type(value).__name__}, not text"
        )
    return value


def _read_store(store: Store, key: str, uri: str) -> list[Record]:
    key = key.strip("/")
    if key.endswith(SUFFIXES):
        return _parse(store.get_bytes(key), key, uri)
    try:
        keys = sorted(k for k in store.list(f"{key}/") if k.endswith(SUFFIXES))
    except StoreError as exc:
        raise DatasetError(f"cannot list the dataset at {uri}: {exc}") from exc
    if not keys:
        raise DatasetError(f"no {' or '.join(SUFFIXES)} file at {uri} (spec.dataset.uri)")
    return [r for k in keys for r in _parse(store.get_bytes(k), k, store.uri_for(k))]


def _read_local(path: Path) -> list[Record]:
    files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES) if path.is_dir() else [path]
    if not files or not files[0].is_file():
        raise DatasetError(f"no {' or '.join(SUFFIXES)} file at {path} (spec.dataset.uri)")
    return [r for f in files for r in _parse(f.read_bytes(), f.name, str(f))]


def _parse(data: bytes, name: str, uri: str) -> list[Record]:
    if name.endswith(".parquet"):
        import pyarrow.parquet

        try:
            return pyarrow.parquet.read_table(io.BytesIO(data)).to_pylist()
        except Exception as exc:  # pyarrow raises its own and OS errors alike
            raise DatasetError(f"{uri}: not a readable Parquet file: {exc}") from exc
    if not name.endswith(".jsonl"):
        raise DatasetError(f"{uri}: unknown format; use {' or '.join(SUFFIXES)}")
    records = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{uri}: line {number}: invalid JSON: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DatasetError(f"{uri}: line {number}: not a JSON object")
        records.append(record)
    return records


def _read_hub(name: str, split: str) -> list[Record]:
    import datasets

    try:
        return list(datasets.load_dataset(name, split=split))
    except Exception as exc:  # the hub client raises many kinds; all mean "cannot load"
        raise DatasetError(
            f"cannot load the hub dataset {name!r} (split {split!r}): {exc}"
        ) from exc
