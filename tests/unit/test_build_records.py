"""A GSRM build's annotation shards: written whole, read back once per id, skipped on a rerun,
and split into training and held-out records the same way by every command."""

from __future__ import annotations

import pytest

from rlkd.build.records import (
    REJECTED_PREFIX,
    done_ids,
    next_shard,
    read_records,
    split_held_out,
    write_shard,
)
from rlkd.errors import StoreError
from rlkd.spec.progress import ANNOTATIONS_PREFIX, GSRM_BUILD_PREFIX
from rlkd.store import LocalStore
from rlkd.store.base import SubStore


def record(i: int) -> dict:
    return {"id": f"ex-{i}", "prompt": [{"role": "user", "content": f"p{i}"}], "completion": []}


def test_shards_are_numbered_and_read_back_in_order_once_per_id(tmp_path) -> None:
    store = SubStore(LocalStore(tmp_path), GSRM_BUILD_PREFIX)
    assert next_shard(store, ANNOTATIONS_PREFIX) == 0
    write_shard(store, ANNOTATIONS_PREFIX, 0, [record(1), record(2)])
    write_shard(store, ANNOTATIONS_PREFIX, 1, [record(3), record(2)])
    write_shard(store, REJECTED_PREFIX, 0, [{"id": "ex-9", "reason": "no steps"}])
    assert next_shard(store, ANNOTATIONS_PREFIX) == 2
    assert [r["id"] for r in read_records(store)] == ["ex-1", "ex-2", "ex-3"]
    assert done_ids(store) == {"ex-1", "ex-2", "ex-3", "ex-9"}
    assert (tmp_path / "gsrm-build" / "annotations" / "shard-00001.jsonl").is_file()


def test_a_broken_shard_says_which_and_how_to_recover(tmp_path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("annotations/shard-00000.jsonl", b'{"id": "a"}\n{not json\n')
    with pytest.raises(StoreError, match=r"shard-00000.jsonl line 2 .*annotate again"):
        read_records(store)


def test_the_split_depends_on_the_records_not_their_order() -> None:
    records = [record(i) for i in range(20)]
    train, held = split_held_out(records, 5, seed=7)
    assert len(held) == 5 and len(train) == 15
    assert {r["id"] for r in train}.isdisjoint(r["id"] for r in held)
    assert split_held_out(list(reversed(records)), 5, seed=7) == (train, held)
    assert split_held_out(records, 5, seed=8)[1] != held


def test_the_split_always_leaves_a_record_to_train_on() -> None:
    train, held = split_held_out([record(1), record(2)], 64, seed=0)
    assert len(train) == 1 and len(held) == 1
    assert split_held_out([], 64, seed=0) == ([], [])


def test_a_sub_store_keeps_its_keys_below_its_prefix(tmp_path) -> None:
    root = LocalStore(tmp_path)
    sub = SubStore(root, "gsrm-build/")
    sub.put_json("progress.json", {"step": 1})
    assert root.get_json("gsrm-build/progress.json") == {"step": 1}
    assert sub.list() == ["progress.json"] and sub.exists("progress.json")
    assert sub.uri_for("progress.json") == root.uri_for("gsrm-build/progress.json")
    sub.delete("progress.json")
    assert root.list() == []
