"""Content-addressed JSON cache over any Store: same inputs, same key, computed once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from rlkd.errors import ObjectNotFoundError, StoreError
from rlkd.store.base import Store, encode_json, validate_key


def cache_key(*parts: Any) -> str:
    """sha256 hex of the canonical JSON of `parts`: equal inputs give equal keys in any
    process, whatever the dict order."""
    return hashlib.sha256(encode_json(list(parts), "cache key inputs")).hexdigest()


def cache_entry(namespace: str, inputs: Any) -> str:
    """The store key of the entry cached for `inputs` under `cache/<namespace>/`."""
    try:
        validate_key(namespace)
    except StoreError as exc:
        raise StoreError(f"invalid cache namespace {namespace!r}: {exc}") from exc
    return f"cache/{namespace}/{cache_key(inputs)}.json"


def cached_json(store: Store, namespace: str, inputs: Any, compute: Callable[[], Any]) -> Any:
    """The document cached for `inputs` under `cache/<namespace>/`, computing and storing it
    on a miss. Concurrent misses may compute twice; the atomic write keeps the entry whole."""
    key = cache_entry(namespace, inputs)
    try:
        return store.get_json(key)
    except ObjectNotFoundError:
        pass
    doc = compute()
    store.put_json(key, doc)
    # Return what a hit would return (e.g. tuples as lists), so callers see one shape.
    return json.loads(encode_json(doc, store.uri_for(key)))
