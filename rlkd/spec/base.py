"""The base every spec model shares: camelCase aliases, unknown fields rejected, and
cross-field rules declared once with both their Python check and their CEL twin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError


class Rule(NamedTuple):
    """A rule a schema alone cannot say.

    `holds` is what rlkd checks offline; `cel` is what the API server checks (the CRD carries it
    as an `x-kubernetes-validations` entry). A test evaluates both on the same documents, so the
    two cannot drift apart. `field` is the camelCase path below the model that the message is
    about ("" for the model itself). A transition rule (uses `oldSelf`) has no offline check.
    """

    field: str
    message: str
    cel: str
    holds: Callable[[Any], bool] | None = None


class SpecModel(BaseModel):
    """Base of every RLKDJob model: fields are camelCase in YAML, unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> SpecModel:
        broken = [
            (rule.field, rule.message)
            for rule in self.rules
            if rule.holds is not None and not rule.holds(self)
        ]
        if broken:
            raise PydanticCustomError(
                "rule_broken",
                "; ".join(f"{field or '.'}: {message}" for field, message in broken),
                {"broken": broken},
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The manifest form: camelCase, JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
