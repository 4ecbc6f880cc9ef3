"""The base every spec model shares: camelCase aliases, strict types, unknown fields rejected,
and cross-field rules declared once with both their Python check and their CEL twin."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Annotated, Any, ClassVar, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import InitErrorDetails, PydanticCustomError


class Rule(NamedTuple):
    """A rule a schema alone cannot say.

    `holds` is what rlkd checks offline; `cel` is what the API server checks (the CRD carries it
    as an `x-kubernetes-validations` entry). A test evaluates both on the same documents, so a
    change to one side alone fails it. `field` is the camelCase path below the model that the
    message is about ("" for the model itself). A transition rule (uses `oldSelf`) has no
    offline check.
    """

    field: str
    message: str
    cel: str
    holds: Callable[[Any], bool] | None = None


class SpecModel(BaseModel):
    """Base of every RLKDJob model: fields are camelCase in YAML, types are as strict as the
    API server's (no "4" for 4), unknown fields are errors."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        # Code may say SpecModel(max_steps=...); documents are read with by_name=False (see
        # rlkd.spec.validate), where `max_steps:` is a typo of maxSteps, not an alias.
        validate_by_alias=True,
        validate_by_name=True,
        allow_inf_nan=False,  # kubectl cannot send .inf or .nan
        extra="forbid",
        frozen=True,
        strict=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _check_rules(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            model = handler(data)
        except ValidationError as exc:
            # Like the API server, still report the rules whose fields are valid, so a user
            # sees every problem at once rather than one round at a time.
            broken = cls._broken(cls._valid_part(data, exc)) if isinstance(data, dict) else []
            if not broken:
                raise
            errors = [_again(error) for error in exc.errors()] + [_rule_error(broken, data)]
            raise ValidationError.from_exception_data(exc.title, errors) from None
        if broken := cls._broken(model):
            raise _broken_error(broken)
        return model

    @classmethod
    def _broken(cls, model: Any) -> list[tuple[str, str]]:
        """(field, message) of every offline rule that fails; a rule that needs a field that
        did not validate is skipped (its field already has a problem of its own)."""
        broken = []
        for rule in cls.rules:
            if rule.holds is None:
                continue
            try:
                holds = rule.holds(model)
            except AttributeError:
                continue
            if not holds:
                broken.append((rule.field, rule.message))
        return broken

    @classmethod
    def _valid_part(cls, data: dict[str, Any], exc: ValidationError) -> SimpleNamespace:
        """The fields of `data` that validate on their own (defaults filled in)."""
        invalid = {error["loc"][0] for error in exc.errors() if error["loc"]}
        values = {}
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key in invalid:
                continue
            if key in data:
                kind: Any = field.annotation
                if field.metadata:
                    kind = Annotated[(kind, *field.metadata)]
                values[name] = TypeAdapter(kind).validate_python(data[key], by_name=False)
            elif not field.is_required():
                values[name] = field.get_default(call_default_factory=True)
        return SimpleNamespace(**values)

    def to_dict(self) -> dict[str, Any]:
        """The manifest form: camelCase, JSON types, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def _broken_error(broken: list[tuple[str, str]]) -> PydanticCustomError:
    message = "; ".join(f"{field or '.'}: {text}" for field, text in broken)
    return PydanticCustomError("rule_broken", message, {"broken": broken})


def _rule_error(broken: list[tuple[str, str]], data: Any) -> InitErrorDetails:
    return {"type": _broken_error(broken), "loc": (), "input": data}


def _again(error: Any) -> InitErrorDetails:
    """An error from `ValidationError.errors()` in the form that re-raises it unchanged."""
    ctx = error.get("ctx")
    return {
        "type": PydanticCustomError(error["type"], error["msg"], ctx),
        "loc": error["loc"],
        "input": error["input"],
    }
