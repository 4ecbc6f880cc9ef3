"""Reading RLKDJob YAML the way Kubernetes does, and louder than PyYAML about mistakes.

PyYAML follows YAML 1.1: it reads `5e-5` as a string and silently keeps the last of two
duplicate keys. Kubernetes reads `5e-5` as a number, and a duplicated `grpo:` block is almost
always a mistake that would silently drop settings. This loader fixes both.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_FLOAT = re.compile(
    r"""^[-+]?(
        [0-9][0-9_]*\.[0-9_]*([eE][-+]?[0-9]+)?
      | \.[0-9_]+([eE][-+]?[0-9]+)?
      | [0-9][0-9_]*[eE][-+]?[0-9]+
      | \.(inf|Inf|INF)
    )$|^\.(nan|NaN|NAN)$""",
    re.X,
)


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping has the same key twice."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKeyError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Replace PyYAML's float resolver by one that also reads exponents without a dot (YAML 1.2).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_all(text: str) -> list[Any]:
    """Every document in a YAML stream, empty documents dropped."""
    return [doc for doc in yaml.load_all(text, Loader=_Loader) if doc is not None]
