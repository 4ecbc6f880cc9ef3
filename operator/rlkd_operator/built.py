"""What a child was built from, so an operator upgrade does not restart a running job.

A new operator version may build different manifests for the same spec (a new image default,
a new probe, a new label). Patching those onto a running job's children would roll its vLLM
servers and restart its learner. So each child records, in two annotations, the RLKDJob
generation it was built at and a hash of what the builders made; while the job's generation is
unchanged, a child whose recorded build differs from today's builders is kept as it is, and only
the fields the operator's state machine owns (a Deployment's replicas, a learner's suspension)
are still set. A spec change (a new generation) rebuilds every child as the builders make it now.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

GENERATION_ANNOTATION = "rlkd.ai/built-generation"
"""The RLKDJob's metadata.generation the child was built at."""
HASH_ANNOTATION = "rlkd.ai/built-hash"
"""A hash of the child as the builders made it, without the state fields."""
STATE_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "replicas"),),
    "PyTorchJob": (("spec", "runPolicy", "suspend"),),
}
"""Fields the operator sets from the job's state (scaled to zero, held suspended), not from the
build: applied to a kept child too, and left out of the hash."""


def build_hash(manifest: Mapping[str, Any]) -> str:
    """A short hash of `manifest` without its state fields and these annotations."""
    plain = copy.deepcopy(dict(manifest))
    for path in STATE_FIELDS.get(plain.get("kind", ""), ()):
        _pop(plain, path)
    for name in (GENERATION_ANNOTATION, HASH_ANNOTATION):
        _pop(plain, ("metadata", "annotations", name))
    if not plain.get("metadata", {}).get("annotations", True):
        del plain["metadata"]["annotations"]
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded(manifest: dict[str, Any], generation: int | None) -> dict[str, Any]:
    """`manifest` (changed in place) with the annotations that record its build."""
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[HASH_ANNOTATION] = build_hash(manifest)
    annotations[GENERATION_ANNOTATION] = "" if generation is None else str(generation)
    return manifest


def desired(live: Mapping[str, Any], manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What to hold `live` to, given today's `recorded` manifest: all of it, or, for a child
    kept as built (same generation, another build; or one that records no build, made by an
    operator before this one), only its state fields; None when it has none."""
    said = (live.get("metadata") or {}).get("annotations") or {}
    wanted = manifest["metadata"]["annotations"]
    unrecorded = HASH_ANNOTATION not in said and GENERATION_ANNOTATION not in said
    same_generation = said.get(GENERATION_ANNOTATION) == wanted[GENERATION_ANNOTATION]
    if not unrecorded and not (
        same_generation and said.get(HASH_ANNOTATION) != wanted[HASH_ANNOTATION]
    ):
        return manifest
    meta = manifest["metadata"]
    state: dict[str, Any] = {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
    }
    found = False
    for path in STATE_FIELDS.get(manifest["kind"], ()):
        value = _get(manifest, path)
        if value is not None:
            _put(state, path, value)
            found = True
    return state if found else None


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _put(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _pop(tree: dict[str, Any], path: tuple[str, ...]) -> None:
    parent = _get(tree, path[:-1])
    if isinstance(parent, dict):
        parent.pop(path[-1], None)
