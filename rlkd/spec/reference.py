"""The RLKDJob field reference (docs/spec-reference.md), written from the generated CRD so the
documentation cannot say anything the API server does not enforce."""

from __future__ import annotations

import json
import sys
from typing import Any

from rlkd.spec.crd import build_crd


def _type(node: dict[str, Any]) -> str:
    kind = node.get("type", "object")
    if kind == "array":
        return f"[]{_type(node['items'])}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map[string]{_type(node['additionalProperties'])}"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    bounds = []
    if "minimum" in node:
        bounds.append(f"{'>' if node.get('exclusiveMinimum') else '>='} {node['minimum']}")
    if "maximum" in node:
        bounds.append(f"{'<' if node.get('exclusiveMaximum') else '<='} {node['maximum']}")
    return f"{kind} {', '.join(bounds)}".strip()


def _sections(node: dict[str, Any], path: str) -> list[str]:
    props = node.get("properties", {})
    required = set(node.get("required", []))
    lines = [f"## `{path}`", "", node.get("description", ""), ""]
    lines += ["| Field | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, sub in props.items():
        default = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
        if isinstance(sub.get("default"), dict) and sub["default"] and "properties" in sub:
            default = "its fields' defaults"  # the CRD writes them out; the section lists them
        if name in required:
            default = "required"
        lines.append(f"| `{name}` | {_type(sub)} | {default} | {sub.get('description', '')} |")
    rules = node.get("x-kubernetes-validations", [])
    if rules:
        lines += ["", "Rules:"]
        lines += [
            f"- `{r.get('fieldPath', '.').lstrip('.') or path.rsplit('.', 1)[-1]}` "
            f"{r['message']} (`{r['rule']}`)"
            for r in rules
        ]
    lines.append("")
    for name, sub in props.items():
        child = sub["items"] if sub.get("type") == "array" else sub
        if "properties" in child:
            lines += _sections(child, f"{path}.{name}{'[]' if child is not sub else ''}")
    return lines


def reference_markdown() -> str:
    """The whole reference, one section per object of the spec."""
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    head = [
        "# RLKDJob field reference",
        "",
        "Generated from the typed spec by `make generate`; do not edit. "
        "`kubectl explain rlkdjob.spec` shows the same descriptions on a cluster.",
        "",
    ]
    return "\n".join(head + _sections(schema["properties"]["spec"], "spec")).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
