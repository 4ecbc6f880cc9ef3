"""The CRD is derived from the typed model: it must equal the committed copy, be a structural
schema the API server accepts, and carry the model's defaults, bounds and rules."""

from __future__ import annotations

import re
import subprocess
import typing
from pathlib import Path
from typing import Any

import celpy
import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from rlkd.cli import main
from rlkd.spec import RLKDJobSpec
from rlkd.spec.base import SpecModel
from rlkd.spec.crd import build_crd, crd_yaml
from rlkd.spec.reference import reference_markdown
from rlkd.spec.validate import _models_in
from rlkd.spec.yamlio import load_all
from tests.crdcheck import default_errors

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "manifests" / "crd" / "rlkd.ai_rlkdjobs.yaml"


def schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_equals_generated(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    printed = capsys.readouterr().out
    assert printed == crd_yaml()
    assert COMMITTED.read_text() == printed, "CRD drifted: run `make generate` and commit"


def test_committed_reference_equals_generated() -> None:
    reference = (ROOT / "docs" / "spec-reference.md").read_text()
    assert reference == reference_markdown(), "reference drifted: run `make generate` and commit"
    for section in ("spec.grpo", "spec.learner.deepspeed", "spec.storage", "spec.gsrm.vllm"):
        assert f"## `{section}`" in reference


def test_crd_is_a_valid_custom_resource_definition() -> None:
    crd = yaml.safe_load(crd_yaml())
    kubernetes_validate.validate(crd, "1.32", strict=True)


def test_schema_is_structural() -> None:
    """The API server's structural-schema rules: every node typed, no references or
    unions, never properties and additionalProperties together, no null defaults."""
    for path, node in walk(schema()):
        assert "type" in node or path == "", path
        assert not {"$ref", "anyOf", "oneOf", "allOf", "not", "$defs", "title"} & node.keys(), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("default", 0) is not None, path
        if node.get("type") == "object" and path.startswith("spec"):
            assert "properties" in node or "additionalProperties" in node, path


def test_every_spec_field_is_documented_for_kubectl_explain() -> None:
    for path, node in walk(schema()):
        if path.startswith(("spec", "status")) and not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


def test_every_cel_rule_compiles() -> None:
    env = celpy.Environment()
    rules = [v["rule"] for _, n in walk(schema()) for v in n.get("x-kubernetes-validations", [])]
    assert len(rules) >= 10
    for rule in rules:
        env.compile(rule)


def _model_defaults(model: type[BaseModel], prefix: str = "spec") -> dict[str, Any]:
    """Every default the model declares, by CRD path (a defaulted sub-object written out in
    full, as the API server validates defaults as written; a factory's list or map too)."""
    out = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}.{field.alias or name}"
        if field.default_factory is not None:
            value = field.default_factory()
            out[path] = value.to_dict() if isinstance(value, SpecModel) else value
        elif not field.is_required() and field.default is not None:
            out[path] = field.default
        suffix = "[]" if typing.get_origin(field.annotation) is list else ""
        for nested in _models_in(field.annotation):
            out |= _model_defaults(nested, path + suffix)
    return out


def test_crd_defaults_equal_model_defaults() -> None:
    crd_defaults = {
        path: node["default"]
        for path, node in walk(schema())
        if "default" in node and path.startswith("spec")
    }
    assert crd_defaults == _model_defaults(RLKDJobSpec)
    assert crd_defaults["spec.grpo.learningRate"] == 5e-5
    assert crd_defaults["spec.rollout"]["mode"] == "server"
    assert crd_defaults["spec.learner"]["deepspeed"] == crd_defaults["spec.learner.deepspeed"]


FACTORY_DEFAULTS = {
    "learner.reportTo": ["tensorboard"],
    "learner.nodeSelector": {},
    "learner.tolerations": [],
    "rollout.vllm.nodeSelector": {},
    "rollout.vllm.tolerations": [],
    "rollout.vllm.extraArgs": [],
    "pods.labels": {},
    "pods.annotations": {},
    "pods.env": [],
}


@pytest.mark.parametrize(("path", "default"), FACTORY_DEFAULTS.items())
def test_a_default_factorys_list_or_map_is_a_field_default(path: str, default: object) -> None:
    """A field the document leaves out is stored as rlkd reads it: a job that sets `learner`
    without `reportTo` gets [tensorboard] from the API server, so writing that value out later is
    no change for the transition rules (which compare has() and values)."""
    node = schema()["properties"]["spec"]
    for part in path.split("."):
        node = node["properties"][part]
    assert node["default"] == default


def test_committed_crd_defaults_pass_the_api_servers_check() -> None:
    """What `kubectl apply` of the CRD runs on v1.30+ (ValidateDefaults): every default, as
    written, against its schema and its rules, transition rules included."""
    committed = yaml.safe_load(COMMITTED.read_text())
    assert default_errors(committed) == []
    defaults = [n for _, n in walk(schema()) if isinstance(n.get("default"), dict)]
    assert sum("x-kubernetes-validations" in n for n in defaults) >= 4  # rules do run on them
    # The lists and maps of default factories are checked too (by their own node's schema, and
    # by the rules of the defaulted objects that hold them, e.g. the nodeSelector key rule).
    lists = [n for _, n in walk(schema()) if isinstance(n.get("default"), list)]
    maps = [n for _, n in walk(schema()) if n.get("default") == {} and "additionalProperties" in n]
    assert len(lists) >= 13 and len(maps) >= 8
    placements = [
        n
        for _, n in walk(schema())
        if isinstance(n.get("default"), dict) and "nodeSelector" in n["default"]
    ]
    assert placements and all("x-kubernetes-validations" in n for n in placements)


def test_a_bad_factory_default_would_be_refused() -> None:
    """The check reaches the new defaults: a reportTo default outside its enum, a tolerations
    default that breaks a toleration's rule, a nodeSelector default with a bad value or (in the
    defaulted learner) a bad key, is what the API server refuses the CRD for."""
    crd = build_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    learner = spec["properties"]["learner"]
    learner["properties"]["reportTo"]["default"] = ["neptune"]
    learner["properties"]["tolerations"]["default"] = [{"operator": "Exists", "value": "v"}]
    learner["properties"]["nodeSelector"]["default"] = {"zone": "a b"}
    learner["default"]["nodeSelector"] = {"bad key": "a"}
    where = "spec.validation.openAPIV3Schema.properties[spec].properties[learner]"
    found = {(e.path, e.rule) for e in default_errors(crd)}
    assert found == {
        (f"{where}.properties[reportTo].default.[0]", False),
        (f"{where}.properties[tolerations].default: [0].value", True),
        (f"{where}.properties[nodeSelector].default.zone", False),
        (f"{where}.default: nodeSelector", True),
    }


def test_an_empty_object_default_fails_its_rules_like_the_api_server_says() -> None:
    """The CRD as the generator once wrote it (`default: {}`) is refused: the rules read keys
    that only defaulting would fill in (the issue's `no such key: mode evaluating rule`)."""
    crd = build_crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in ("rollout", "rewards", "teacher"):
        spec["properties"][name]["default"] = {}
    spec["properties"]["learner"]["properties"]["deepspeed"]["default"] = {}
    errors = default_errors(crd)
    where = "spec.validation.openAPIV3Schema.properties[spec].properties"
    assert {e.path for e in errors} == {
        f"{where}[rollout].default",
        f"{where}[rewards].default",
        f"{where}[teacher].default",
        f"{where}[learner].properties[deepspeed].default",
    }
    assert all("evaluating rule" in e.message and e.rule for e in errors)
    teacher = {e.message.split(" evaluating rule: ")[1] for e in errors if "[teacher]" in e.path}
    assert "is immutable once the job exists" in teacher  # the transition rule runs too


RULED = {
    "type": "object",
    "properties": {
        "mode": {"type": "string", "enum": ["server", "colocate"], "default": "server"},
        "replicas": {"type": "integer", "minimum": 1, "default": 1},
    },
    "required": ["mode"],
    "x-kubernetes-validations": [
        {"rule": "self.mode != 'server' || self.replicas == 1", "message": "one server"},
        {"rule": "self.mode == oldSelf.mode", "message": "is immutable"},
    ],
}


@pytest.mark.parametrize(
    ("default", "found"),
    [
        ({"mode": "server", "replicas": 1}, []),
        ({}, ["schema: 'mode' is a required property"]),
        ({"mode": "server"}, ["rule: no such member in mapping: 'replicas' evaluating rule"]),
        ({"mode": "server", "replicas": 2}, ["rule: one server"]),
        ({"mode": "colocate", "replicas": 2}, []),
        ({"mode": "spread", "replicas": 1}, ["schema: 'spread' is not one of"]),
        ({"mode": "server", "replicas": 0}, ["schema: 0 is less than the minimum of 1"]),
        ({"mode": "server", "replicas": 1, "extra": 1}, ["schema: Additional properties"]),
    ],
)
def test_a_default_is_checked_as_written(default: dict[str, Any], found: list[str]) -> None:
    """Table: the checks ValidateDefaults makes, on a default with no defaulting applied."""
    node = {**RULED, "default": default}
    crd = {"spec": {"versions": [{"schema": {"openAPIV3Schema": {"type": "object",
        "properties": {"spec": node}}}}]}}  # fmt: skip
    errors = default_errors(crd)
    said = [f"{'rule' if e.rule else 'schema'}: {e.message}" for e in errors]
    assert len(said) == len(found), said
    for text, prefix in zip(said, found, strict=True):
        assert text.startswith(prefix), said


def test_status_has_a_schema_without_defaults() -> None:
    status = schema()["properties"]["status"]
    assert set(status["properties"]) >= {"phase", "conditions", "observedGeneration", "progress"}
    assert status["properties"]["phase"]["enum"] == [
        "Pending",
        "Provisioning",
        "Annotating",
        "BuildingGSRM",
        "Preparing",
        "Training",
        "Evaluating",
        "Succeeded",
        "Failed",
        "Suspended",
    ]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert not [path for path, node in walk(status) if "default" in node]


def test_printer_columns_and_names() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "rlkdjobs.rlkd.ai"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "RLKDJob",
        "rlkdjobs",
        ["rlkd"],
    )
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Step", "Reward", "Age"} <= columns.keys()
    paths = {path for path, _ in walk(version["schema"]["openAPIV3Schema"])}
    for column in columns.values():
        if column["jsonPath"] != ".metadata.creationTimestamp":
            assert column["jsonPath"].lstrip(".") in paths, column


def test_immutable_fields_carry_transition_rules() -> None:
    spec = schema()["properties"]["spec"]["properties"]
    for field in ("student", "dataset"):
        assert {"rule": "self == oldSelf", "message": "is immutable once the job exists"} in spec[
            field
        ]["x-kubernetes-validations"]
    for field in ("gsrm", "judge"):
        rules = [v["rule"] for v in spec[field]["x-kubernetes-validations"]]
        assert any("oldSelf.model" in r for r in rules)


def _rules():
    for path, node in walk(schema()):
        for entry in node.get("x-kubernetes-validations", []):
            yield path, node, entry


_CEL_STRING = re.compile(r"""(?<![rR])('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_CEL_ESCAPE = re.compile(r"""\\([\\'"`?abfnrtv]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[0-3][0-7]{2})""")


def test_cel_string_literals_use_only_escapes_cel_go_accepts() -> None:
    """cel-python forgives `'\\.'`; cel-go (the API server) refuses to compile it."""
    for path, _, entry in _rules():
        for literal in _CEL_STRING.findall(entry["rule"]):
            leftover = _CEL_ESCAPE.sub("", literal)
            assert "\\" not in leftover, f"{path}: bad escape in {entry['rule']}"


def test_field_paths_name_fields_of_their_schema() -> None:
    """The API server refuses a CRD whose rule's fieldPath is not a property path."""
    for path, node, entry in _rules():
        target = node
        for part in entry.get("fieldPath", "").split(".")[1:]:
            assert part in target.get("properties", {}), f"{path}: bad fieldPath {entry}"
            target = target["properties"][part]


def test_kustomize_installs_exactly_the_generated_crd() -> None:
    """GitOps tools apply manifests/crd through kustomize (the machine's real kubectl): the
    RLKDJob CRD as generated, and kopf's two peering CRDs."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "manifests" / "crd")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    docs = load_all(out)
    rlkdjobs = [d for d in docs if d["metadata"]["name"] == build_crd()["metadata"]["name"]]
    assert rlkdjobs == [build_crd()]  # kubectl's number rules: `5e-05` is a number
    assert sorted(d["metadata"]["name"] for d in docs if d not in rlkdjobs) == [
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ]
