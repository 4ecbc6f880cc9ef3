"""Reading RLKDJob YAML as kubectl does, and louder than PyYAML about mistakes.

kubectl turns YAML into JSON with go-yaml (YAML 1.1 rules, mostly); PyYAML differs in ways that
would make `rlkd validate` disagree with the API server:

- `5e-5` is a number to kubectl, a string to PyYAML;
- `2024-06-01` and `12:30` stay strings for kubectl (no timestamps, no base-60 integers);
- `y` and `n` are booleans for go-yaml;
- JSON has one number type, so `20.0` reaches the server as the integer 20;
- mapping keys are strings in JSON (`1:` becomes "1").

And two silent PyYAML behaviours become errors: a duplicated key (a second `grpo:` block would
drop the first) and an unhashable key.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml
from yaml.constructor import ConstructorError

FLOAT_TAG = "tag:yaml.org,2002:float"
BOOL_TAG = "tag:yaml.org,2002:bool"
MERGE_TAG = "tag:yaml.org,2002:merge"
_DROPPED_TAGS = {FLOAT_TAG, BOOL_TAG, "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:int"}

_FLOAT = re.compile(
    r"""^[-+]?(
        [0-9][0-9_]*\.[0-9_]*([eE][-+]?[0-9]+)?
      | \.[0-9_]+([eE][-+]?[0-9]+)?
      | [0-9][0-9_]*[eE][-+]?[0-9]+
      | \.(inf|Inf|INF)
    )$|^\.(nan|NaN|NAN)$""",
    re.X,
)
# go-yaml's integers: decimal, 0x hex, 0 octal, 0b binary; no base 60.
_INT = re.compile(r"^[-+]?(0b[0-1_]+|0[0-7_]+|(0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$")
_BOOL = re.compile(
    r"^(y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$"
)
_TRUE = {"y", "yes", "true", "on"}


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping has the same key twice."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:  # `<<: *anchor` merges; explicit keys may override
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, list | dict):
                raise ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    "found a key that is a list or a mapping",
                    key_node.start_mark,
                )
            key = _json_key(key)
            if key in seen:
                raise DuplicateKeyError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        self.flatten_mapping(node)  # merged pairs first, so the node's own keys override them
        return {
            _json_key(self.construct_object(key_node, deep=deep)): self.construct_object(
                value_node, deep=deep
            )
            for key_node, value_node in node.value
        }

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float | int:
        value = super().construct_yaml_float(node)
        return int(value) if math.isfinite(value) and value.is_integer() else value

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool:
        return self.construct_scalar(node).lower() in _TRUE


def _json_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(BOOL_TAG, _BOOL, list("yYnNtTfFoO"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver(FLOAT_TAG, _FLOAT, list("-+0123456789."))
_Loader.add_constructor(FLOAT_TAG, _Loader.construct_yaml_float)
_Loader.add_constructor(BOOL_TAG, _Loader.construct_yaml_bool)


def load_all(text: str) -> list[Any]:
    """Every document in a YAML stream, empty documents dropped."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]


class _Dumper(yaml.SafeDumper):
    """Writes YAML that `load_all` reads back as the same values: a string that our loader would
    take for a number or a boolean (`y`, `5e-5`) is quoted, because the dumper decides what needs
    quotes with the loader's own rules."""

    def represent_str(self, data: str) -> yaml.ScalarNode:
        style = "|" if "\n" in data else None  # prompts and embedded files stay readable
        return self.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.yaml_implicit_resolvers = {k: list(v) for k, v in _Loader.yaml_implicit_resolvers.items()}
_Dumper.add_representer(str, _Dumper.represent_str)


def dump_all(docs: list[Any]) -> str:
    """Documents as a multi-document YAML stream, keys in the order given."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
