"""Turn RLKDJob documents into typed jobs, or into one readable line per problem.

The lines look like `spec.grpo.learningRate: must be > 0 (got -1e-05)`: the camelCase path a
user sees in YAML, what is wrong, what was given, and a hint where one helps.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from rlkd.errors import SpecError
from rlkd.spec.refs import PATTERN_HINTS, S3_BUCKET_PATTERN, s3_bucket_problems
from rlkd.spec.resource import API_VERSION, KIND, RLKDJob
from rlkd.spec.yamlio import load_all


class Problem(NamedTuple):
    """One thing wrong with a document: where (a dotted path, "" for the whole document)
    and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    return repr(value) if isinstance(value, str) else str(value)


def _join(loc: tuple[str | int, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list, dict, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        args = args[:1]
    elif origin is dict:
        args = args[1:]
    return [model for arg in args for model in _models_in(arg)]


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class whose fields sit at `loc` (the path of an error inside RLKDJob)."""
    model: type[BaseModel] | None = RLKDJob
    for part in loc:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if field is None:
            return None
        candidates = _models_in(field.annotation)
        model = candidates[0] if candidates else None
    return model


def _unknown_field(loc: tuple[str | int, ...]) -> str:
    parent = _model_at(loc[:-1])
    if parent is None:
        return "unknown field"
    valid = [f.alias or n for n, f in parent.model_fields.items()]
    by_lower = {name.lower(): name for name in valid}
    close = difflib.get_close_matches(str(loc[-1]).lower(), by_lower, n=1, cutoff=0.6)
    if close:
        return f"unknown field; did you mean {by_lower[close[0]]}?"
    return f"unknown field; valid fields here: {', '.join(valid)}"


_BOUNDS = {
    "greater_than": ">",
    "greater_than_equal": ">=",
    "less_than": "<",
    "less_than_equal": "<=",
}
_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping of fields",
    "model_attributes_type": "a mapping of fields",
}


def _problems_of(error: ErrorDetails) -> list[Problem]:
    loc, kind, ctx = tuple(error["loc"]), error["type"], error.get("ctx") or {}
    given = f" (got {_show(error['input'])})" if "input" in error else ""
    if kind == "rule_broken":
        return [
            Problem(_join(loc + tuple(f for f in field.split(".") if f)), message)
            for field, message in ctx["broken"]
        ]
    if kind == "missing":
        message, given = "is required", ""
    elif kind == "extra_forbidden":
        message = _unknown_field(loc)
        given = ""
    elif kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        message = f"must be {_BOUNDS[kind]} {_show(bound)}"
    elif kind in _TYPES:
        message = f"must be {_TYPES[kind]}"
    elif kind == "literal_error":
        message = f"must be one of {ctx['expected']}"
    elif kind in ("string_too_short", "string_too_long"):
        limit = ctx.get("min_length", ctx.get("max_length"))
        side = "least" if kind == "string_too_short" else "most"
        message, given = f"must be at {side} {limit} characters", f" (got {len(error['input'])})"
    elif kind in ("too_short", "too_long"):
        limit = ctx.get("min_length", ctx.get("max_length"))
        side = "least" if kind == "too_short" else "most"
        message, given = f"must have at {side} {limit} items", f" (got {ctx.get('actual_length')})"
    elif kind == "string_pattern_mismatch" and ctx["pattern"] == S3_BUCKET_PATTERN:
        message = "must be a valid S3 bucket name: " + "; ".join(s3_bucket_problems(error["input"]))
    elif kind == "string_pattern_mismatch":
        message = PATTERN_HINTS.get(ctx["pattern"], f"must match {ctx['pattern']}")
    elif kind == "value_error":
        message, given = str(ctx.get("error", error["msg"])), ""
    else:
        message = error["msg"]
    return [Problem(_join(loc), message + given)]


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """`invalid YAML at line L, column C: problem (context)`, without PyYAML's source echo."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return f"invalid YAML: {' '.join(str(exc).split())}"
    mark = exc.problem_mark
    context = f" ({exc.context})" if exc.context else ""
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"


def _without_nulls(value: Any) -> Any:
    """The document as the API server validates it: `key: null` is pruned (then defaulted)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def check_document(doc: Any) -> tuple[RLKDJob | None, list[Problem]]:
    """Validate one parsed document: the job, or every problem found in it."""
    doc = _without_nulls(doc)
    if not isinstance(doc, dict):
        return None, [Problem("", f"expected an {KIND} mapping (got {_show(doc)})")]
    identity = [
        Problem(key, f"must be {want} (got {_show(doc.get(key))})")
        for key, want in (("apiVersion", API_VERSION), ("kind", KIND))
        if doc.get(key) != want
    ]
    if identity:
        return None, identity
    try:
        return RLKDJob.model_validate(doc, by_name=False), []
    except ValidationError as exc:
        return None, [p for error in exc.errors() for p in _problems_of(error)]


def parse_job(doc: Any) -> RLKDJob:
    """One RLKDJob from a parsed document (a file's or the API server's), or SpecError."""
    job, problems = check_document(doc)
    if job is None:
        raise SpecError([str(p) for p in problems])
    return job


def check_file(path: str | Path) -> tuple[list[RLKDJob], list[str]]:
    """Every job in a (multi-document) YAML file, and one `FILE: path: message` line per
    problem; a problem in a later document ends with `[document N]`."""
    name = str(path)
    try:
        docs = load_all(Path(path).read_text(encoding="utf-8"))
        checked = [check_document(doc) for doc in docs]
    except OSError as exc:
        return [], [f"{name}: cannot read the file: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [], [f"{name}: not a UTF-8 text file"]
    except yaml.YAMLError as exc:
        return [], [f"{name}: {_yaml_problem(exc)}"]
    except RecursionError:
        return [], [f"{name}: the YAML is nested too deeply"]
    if not docs:
        return [], [f"{name}: empty file: expected at least one {KIND} document"]
    jobs, lines = [], []
    for index, (job, problems) in enumerate(checked, start=1):
        where = f" [document {index}]" if len(docs) > 1 else ""
        lines += [f"{name}: {problem}{where}" for problem in problems]
        if job is not None:
            jobs.append(job)
    return jobs, lines


def load_job(path: str | Path) -> RLKDJob:
    """The single RLKDJob in a file (what `rlkd run` and `rlkd render` read), or SpecError."""
    jobs, problems = check_file(path)
    if problems:
        raise SpecError(problems)
    if len(jobs) != 1:
        raise SpecError([f"{path}: expected one {KIND} document, found {len(jobs)}"])
    return jobs[0]
