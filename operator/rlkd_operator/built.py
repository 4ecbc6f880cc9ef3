"""What a child was built from, so an operator upgrade does not restart a running job, and a spec
change removes what it dropped.

A new operator version may build different manifests for the same spec (a new image default,
a new probe, a new label). Patching those onto a running job's children would roll its vLLM
servers and restart its learner. So each child records, in two annotations, the RLKDJob
generation it was built at and the manifest the builders made (JSON, without the state fields);
while the job's generation is unchanged, a child whose recorded build differs from today's
builders is kept as it is, and only the fields the operator's state machine owns (a Deployment's
replicas, a learner's suspension) are still set. A spec change (a new generation) rebuilds every
child as the builders make it now.

The operator writes children by merge patch, which leaves a key the new manifest lacks where it
is. The recorded build says which keys the operator wrote before (like kubectl's
last-applied-configuration): a rebuild sends null for those the new build dropped (a removed
nodeSelector entry, label or annotation), and leaves the keys others added (the API server's
defaults, Kueue's) alone. Lists are replaced whole by a merge patch, so only maps need this.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

GENERATION_ANNOTATION = "rlkd.ai/built-generation"
"""The RLKDJob's metadata.generation the child was built at."""
BUILD_ANNOTATION = "rlkd.ai/built"
"""The child as the builders made it (compact JSON, keys sorted), without the state fields and
these annotations."""
STATE_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "Deployment": (("spec", "replicas"),),
    "PyTorchJob": (("spec", "runPolicy", "suspend"),),
}
"""Fields the operator sets from the job's state (scaled to zero, held suspended), not from the
build: applied to a kept child too, and left out of the record."""


def build_record(manifest: Mapping[str, Any]) -> str:
    """`manifest` as BUILD_ANNOTATION records it."""
    plain = copy.deepcopy(dict(manifest))
    for path in STATE_FIELDS.get(plain.get("kind", ""), ()):
        _pop(plain, path)
    for name in (GENERATION_ANNOTATION, BUILD_ANNOTATION):
        _pop(plain, ("metadata", "annotations", name))
    if not plain.get("metadata", {}).get("annotations", True):
        del plain["metadata"]["annotations"]
    return json.dumps(plain, sort_keys=True, separators=(",", ":"))


def recorded(manifest: dict[str, Any], generation: int | None) -> dict[str, Any]:
    """`manifest` (changed in place) with the annotations that record its build."""
    annotations = manifest["metadata"].setdefault("annotations", {})
    annotations[BUILD_ANNOTATION] = build_record(manifest)
    annotations[GENERATION_ANNOTATION] = "" if generation is None else str(generation)
    return manifest


def desired(live: Mapping[str, Any], manifest: dict[str, Any]) -> dict[str, Any] | None:
    """What to hold `live` to, given today's `recorded` manifest: all of it, with null for the
    keys its recorded build had and this one dropped; or, for a child kept as built (same
    generation, another build; or one that records no build, made by an operator before this
    one), only its state fields; None when it has none."""
    said = (live.get("metadata") or {}).get("annotations") or {}
    wanted = manifest["metadata"]["annotations"]
    unrecorded = BUILD_ANNOTATION not in said and GENERATION_ANNOTATION not in said
    same_generation = said.get(GENERATION_ANNOTATION) == wanted[GENERATION_ANNOTATION]
    before = said.get(BUILD_ANNOTATION)
    if not unrecorded and not (same_generation and before != wanted[BUILD_ANNOTATION]):
        if before is None or before == wanted[BUILD_ANNOTATION]:
            return manifest
        return _with_nulls(manifest, _dropped(_parsed(before), manifest, live))
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


def _parsed(record: str) -> Mapping[str, Any]:
    """A recorded build; empty when the annotation is not one (edited by hand): nothing is then
    known to be dropped."""
    try:
        value = json.loads(record)
    except ValueError:
        return {}
    return value if isinstance(value, Mapping) else {}


def _dropped(before: Mapping[str, Any], now: Mapping[str, Any], live: Any) -> dict[str, Any]:
    """Null for each key of `before`'s maps that `now` lacks and `live` still holds. A string map
    that `now` lacks (labels, annotations, a nodeSelector: other writers add keys to those) loses
    only the keys `before` had; any other value is removed whole."""
    out: dict[str, Any] = {}
    if not isinstance(live, Mapping):
        return out
    for key, value in before.items():
        if key not in live:
            continue
        if key in now:
            if isinstance(value, Mapping) and isinstance(now[key], Mapping):
                nested = _dropped(value, now[key], live[key])
                if nested:
                    out[key] = nested
        elif isinstance(value, Mapping) and all(isinstance(v, str) for v in value.values()):
            nested = _dropped(value, {}, live[key])
            if nested:
                out[key] = nested
        else:
            out[key] = None
    return out


def _with_nulls(manifest: Mapping[str, Any], nulls: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(manifest)
    for key, value in nulls.items():
        merged[key] = None if value is None else _with_nulls(manifest.get(key, {}), value)
    return merged


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
