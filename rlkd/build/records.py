"""The annotations a GSRM build keeps: JSON Lines shards of SFT records in the build's store,
and the one split of them into training and held-out records that `train-gsrm` and
`eval-gsrm` share.

A shard is written whole, once (each store write is atomic), so a killed annotation loses at
most the records not yet in a shard and never leaves half of one; the ids in the shards are
what a rerun skips.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from rlkd.errors import StoreError
from rlkd.spec.progress import ANNOTATIONS_PREFIX
from rlkd.store.base import Store

REJECTED_PREFIX = "rejected/"
"""Paths the annotator could not decompose after its retry, one JSON line each with the reason:
kept so a rerun does not pay for them again, and so a person can read why."""

Record = dict[str, Any]
"""One line: `rlkd.gsrm.prompts.sft_record`'s prompt and completion, plus `id` (the example's)
and whatever else the writer adds (`domain`, `steps`)."""


def shard_key(prefix: str, number: int) -> str:
    """The key of shard `number` below `prefix` (ANNOTATIONS_PREFIX or REJECTED_PREFIX)."""
    return f"{prefix}shard-{number:05d}.jsonl"


def next_shard(store: Store, prefix: str) -> int:
    """The number the next shard below `prefix` takes (shards are never overwritten)."""
    return len(_shards(store, prefix))


def write_shard(store: Store, prefix: str, number: int, records: Sequence[Record]) -> str:
    """Write `records` as shard `number` below `prefix`; returns its key."""
    key = shard_key(prefix, number)
    lines = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    store.put_bytes(key, lines.encode())
    return key


def read_records(store: Store, prefix: str = ANNOTATIONS_PREFIX) -> list[Record]:
    """Every record below `prefix`, in shard order; a record id seen twice (two annotations of
    one example, from runs that overlapped) is kept once, the first."""
    seen: set[str] = set()
    records = []
    for key in _shards(store, prefix):
        for number, line in enumerate(store.get_bytes(key).decode().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise StoreError(
                    f"{store.uri_for(key)} line {number} is not JSON ({exc}): remove the shard "
                    "and annotate again (its examples are redone)"
                ) from None
            if record["id"] not in seen:
                seen.add(record["id"])
                records.append(record)
    return records


def done_ids(store: Store) -> set[str]:
    """Ids a rerun of the annotation skips: accepted or rejected by an earlier run."""
    return {
        r["id"]
        for prefix in (ANNOTATIONS_PREFIX, REJECTED_PREFIX)
        for r in read_records(store, prefix)
    }


def split_held_out(
    records: Iterable[Record], held_out: int, seed: int
) -> tuple[list[Record], list[Record]]:
    """(training, held-out): `held_out` records chosen by a seeded hash of their ids, so the
    split depends only on which records exist, not on the order annotation wrote them. Fewer
    records than `held_out` + 1 leaves at least one for training."""
    ranked = sorted(records, key=lambda r: hashlib.sha256(f"{seed}:{r['id']}".encode()).digest())
    count = min(held_out, max(len(ranked) - 1, 0))
    held = {r["id"] for r in ranked[:count]}
    ordered = sorted(ranked, key=lambda r: str(r["id"]))
    return [r for r in ordered if r["id"] not in held], [r for r in ordered if r["id"] in held]


def _shards(store: Store, prefix: str) -> list[str]:
    return [k for k in store.list(prefix + "shard-") if k.endswith(".jsonl")]
