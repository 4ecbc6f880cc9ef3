"""Check a custom resource against a CRD offline, as the API server would.

No kube-apiserver runs here (see TESTING.md), so this helper does what the server does with a
CRD's schema, in the server's order: apply structural defaults, validate types and bounds with
jsonschema (OpenAPI 3.0 keywords, so Draft 4 semantics for exclusiveMinimum), reject unknown
fields (the server's strict field validation, which kubectl uses by default), then evaluate the
`x-kubernetes-validations` CEL rules with cel-python, numbers as doubles like the server does.
It is a stand-in for the server, not a mock of our code: every rule checked is the CRD's own.

`default_errors` is what the server says to the CRD itself (apiextensions-apiserver,
`schema/defaulting/validation.go`, `ValidateDefaults`): every `default` is checked against its
own schema node *as written* (not pruned, not defaulted first), for unknown fields, types and
bounds, then its CEL rules run with `oldSelf` = `self` = the default (so transition rules run
too), and, with CRDValidationRatcheting (on from v1.30), once more with no old value (which
skips transition rules). A rule that fails or cannot be evaluated ("no such key") refuses the
CRD; so does an evaluation error in an object's own rules, here as on the server.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any, NamedTuple

import celpy
import jsonschema

Path = tuple[str | int, ...]


class CRDError(NamedTuple):
    path: str
    message: str
    rule: bool = False  # a CEL rule said it (not the schema)


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting: absent properties with a default get it, recursively."""
    if isinstance(value, dict) and "properties" in schema:
        for name, sub in schema["properties"].items():
            if name not in value and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                value[name] = apply_defaults(value[name], sub)
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def _strict(schema: Any, path: Path = ()) -> Any:
    """The schema with unknown fields rejected and the x-kubernetes extensions dropped. The
    root's metadata is ObjectMeta, which the server checks itself: left open here."""
    if isinstance(schema, list):
        return [_strict(item, path) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: _strict(sub, (*path, name)) for name, sub in value.items()}
        elif not key.startswith("x-kubernetes"):
            out[key] = _strict(value, path)
    if "properties" in schema and schema.get("type") == "object" and path != ("metadata",):
        out["additionalProperties"] = False
    return out


def _as_cel_input(value: Any, schema: dict[str, Any]) -> Any:
    if schema.get("type") == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return {k: _as_cel_input(v, props.get(k, extra)) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_cel_input(v, schema.get("items", {})) for v in value]
    return value


@cache
def _program(rule: str) -> celpy.Runner:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def cel_errors(
    value: Any, schema: dict[str, Any], old: Any = None, path: Path = ()
) -> list[CRDError]:
    """Every broken CEL rule under `path`; transition rules (oldSelf) only where `old` exists."""
    errors = []
    for entry in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in entry["rule"]
        if transition and old is None:
            continue
        activation = {"self": celpy.json_to_cel(_as_cel_input(value, schema))}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(_as_cel_input(old, schema))
        field = tuple(p for p in entry.get("fieldPath", "").split(".") if p)
        try:
            result = _program(entry["rule"]).evaluate(activation)
        except celpy.CELEvalError as exc:  # the server's "no such key: x evaluating rule: ..."
            message = f"{exc.args[0] if exc.args else exc} evaluating rule: {entry['message']}"
            errors.append(CRDError(dotted(path), message, rule=True))
            continue
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            errors.append(CRDError(dotted(path + field), entry["message"], rule=True))
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                old_sub = old.get(name) if isinstance(old, dict) else None
                errors += cel_errors(value[name], sub, old_sub, (*path, name))
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += cel_errors(item, schema["items"], None, (*path, index))
    return errors


def crd_errors(
    obj: dict[str, Any], crd: dict[str, Any], old: dict[str, Any] | None = None
) -> list[CRDError]:
    """What the API server would say to creating `obj` (or updating `old` to it)."""
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    obj = apply_defaults(copy.deepcopy(obj), schema)
    old = apply_defaults(copy.deepcopy(old), schema) if old is not None else None
    validator = jsonschema.Draft4Validator(_strict(schema))
    errors = [
        CRDError(dotted(tuple(e.absolute_path)), e.message) for e in validator.iter_errors(obj)
    ]
    if errors:  # the rules assume well-typed values; schema errors already reject the object
        return errors
    return cel_errors(obj, schema, old)


def _schema_nodes(node: dict[str, Any], path: str = "") -> Any:
    """Every schema node below `node` with its path as the server words it
    (properties[spec].properties[rollout], items); additionalProperties may hold no defaults."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _schema_nodes(sub, f"{path}.properties[{name}]".lstrip("."))
    if isinstance(node.get("items"), dict):
        yield from _schema_nodes(node["items"], f"{path}.items")


def default_errors(crd: dict[str, Any]) -> list[CRDError]:
    """What the API server says about the CRD's defaults (ValidateDefaults): each default as
    written against its node's schema, then that node's CEL rules and those below it."""
    errors = []
    for version in crd["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        for path, node in _schema_nodes(root):
            if "default" not in node:
                continue
            where = f"spec.validation.openAPIV3Schema.{path}.default"
            value = node["default"]
            validator = jsonschema.Draft4Validator(_strict(node, ("default",)))
            found = [
                CRDError(".".join((where, dotted(tuple(e.absolute_path)))).strip("."), e.message)
                for e in validator.iter_errors(value)
            ]
            if not found:  # the server runs the rules only on a default that validates
                # oldSelf = self: every rule runs. The ratcheting pass (no old value) adds
                # nothing here: it only differs for optionalOldSelf rules, which we never emit.
                found = cel_errors(value, node, old=value)
                found = [e._replace(path=f"{where}: {e.path}" if e.path else where) for e in found]
            errors += found
    return errors
