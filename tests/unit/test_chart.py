"""charts/rlkd-operator with the real Helm SDK (helm-python-sdk, Helm v4, offline): every ci/
value set renders, lints strictly and passes kubernetes-validate --strict; the schema refuses bad
values; RBAC is the one list in rlkd_operator.resources; the env it sets is what
OperatorDefaults.from_env reads; crds/ and manifests/ derive from one place.

manifests/base and manifests/overlays/* are the chart rendered with each directory's values.yaml:
`make generate` rewrites them (it runs this module with RLKD_REGENERATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from rlkd import __version__
from rlkd.cli import build_parser
from rlkd.k8s.defaults import (
    GPU_ENV,
    HUB_ENV,
    NETWORK_ENV,
    OPERATOR_NAMESPACE_ENV,
    POD_ENV,
    QUEUE_ENV,
    STORAGE_ENV,
    TRAINER_IMAGE_ENV,
    VLLM_IMAGE,
    VLLM_IMAGE_ENV,
    OperatorDefaults,
)
from rlkd.spec.crd import crd_yaml
from rlkd.spec.yamlio import dump_all
from rlkd_operator.resources import ALL, rbac_rules
from rlkd_operator.settings import PEERING_NAME

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rlkd-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
MANIFESTS = ROOT / "manifests"
RENDERED_DIRS = [MANIFESTS / "base", *sorted((MANIFESTS / "overlays").iterdir())]
RELEASE, NAMESPACE = "rlkd-operator", "rlkd-system"
KUBERNETES_VERSION = "1.30"
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering", "ServiceMonitor"}
"""Kinds kubernetes-validate has no schema for."""
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")
FROM_ENV_NAMES = {
    OPERATOR_NAMESPACE_ENV,
    VLLM_IMAGE_ENV,
    TRAINER_IMAGE_ENV,
    *STORAGE_ENV.values(),
    *POD_ENV.values(),
    *HUB_ENV.values(),
    *NETWORK_ENV.values(),
    *GPU_ENV.values(),
    QUEUE_ENV,
}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet makes it in the release namespace (the only
    field reference the chart uses is the pod's namespace)."""
    env = {}
    for var in container["env"]:
        if "valueFrom" in var:
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, var
            env[var["name"]] = NAMESPACE
        else:
            env[var["name"]] = var["value"]
    return env


def values_of(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders (templates only; crds/ is listed apart), in file order."""
    out = helm.Chart.load(CHART).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(out.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def by_key(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{o['kind']}/{o['metadata'].get('namespace', '')}/{o['metadata']['name']}": o
        for o in objects
    }


@pytest.fixture(scope="module", params=CI_VALUES, ids=lambda p: p.name.removesuffix("-values.yaml"))
def ci(request) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values = values_of(request.param)
    return values, render(values)


def test_app_version_is_the_package_version() -> None:
    assert helm.Chart.load(CHART).metadata["appVersion"] == __version__


def test_crds_are_the_generated_ones_and_the_manifests_copies() -> None:
    crds = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    manifests = {
        p.name: p.read_text()
        for p in (MANIFESTS / "crd").glob("*.yaml")
        if p.name != "kustomization.yaml"
    }
    assert crds == manifests, (
        "charts/rlkd-operator/crds/ must equal manifests/crd/ (`make generate`)"
    )
    assert crds.pop("rlkd.ai_rlkdjobs.yaml") == crd_yaml(), "run `make generate`"
    assert list(crds) == ["kopf.dev_peerings.yaml"]
    for doc in yaml.safe_load_all((CHART / "crds" / "kopf.dev_peerings.yaml").read_text()):
        assert doc["kind"] == "CustomResourceDefinition"


def test_rbac_rules_file_is_generated_from_the_operator_resources() -> None:
    committed = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
    assert committed == rbac_rules(), "run `make generate`"


def test_lints_strictly_with_every_value_set() -> None:
    for path in CI_VALUES:
        report = helm.lint(CHART, values_of(path), strict=True, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, (path.name, problems)


def test_every_rendered_built_in_object_passes_kubernetes_validate_strict(ci) -> None:
    _, objects = ci
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_operator_runs_one_peered_hardened_replica_on_the_cli_ports(ci) -> None:
    values, objects = ci
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert (spec["replicas"], spec["strategy"]["type"]) == (1, "Recreate")
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    args = build_parser().parse_args(container["args"])
    namespaces = values.get("watchNamespaces", [])
    assert (args.command, args.namespaces, args.all_namespaces) == (
        "operator",
        namespaces,
        not namespaces,
    )
    assert not args.standalone
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert f":{ports[container[probe]['httpGet']['port']]}/healthz" in args.liveness
    assert ports["metrics"] == args.metrics_port
    security = container["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    [mount] = container["volumeMounts"]
    assert {v["name"]: v for v in pod["volumes"]}[mount["name"]]["emptyDir"]
    peering = "KopfPeering" if namespaces else "ClusterKopfPeering"
    peerings = [o["metadata"] for o in objects if o["kind"].endswith("KopfPeering")]
    assert [(peering, m["name"], m.get("namespace")) for m in peerings] == [
        (peering, PEERING_NAME, ns) for ns in namespaces or [None]
    ]


def test_the_env_it_sets_is_what_from_env_reads(ci) -> None:
    _, objects = ci
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert set(env) <= FROM_ENV_NAMES
    OperatorDefaults.from_env(env)  # every value is one the operator accepts


def test_every_default_reaches_the_operator() -> None:
    values = values_of(CHART / "ci" / "external-s3-values.yaml")
    [deployment] = [o for o in render(values) if o["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    got = OperatorDefaults.from_env(env_of(container))
    assert got.trainer_image == "registry.example.com/ml/rlkd-trainer:0.1.0"
    assert got.vllm_image == VLLM_IMAGE
    assert got.storage is not None
    assert (got.storage.endpoint, got.storage.prefix, got.storage.credentials_secret) == (
        values["storage"]["endpoint"],
        "team-a",
        "rlkd-s3-credentials",
    )
    assert got.pods.model_dump(exclude_none=True) == {
        "service_account_name": "rlkd-jobs",
        "image_pull_secrets": ["regcred"],
        "labels": {"team": "a"},
        "annotations": {"cost-center": "42"},
        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
        "security": "restricted",
    }
    assert (got.hub.cache_claim, got.hub.token_secret) == ("hf-cache", "hf-token")
    assert got.network.monitoring_namespace == "monitoring"
    assert got.gpu.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [t.to_dict() for t in got.gpu.tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert got.queue_name == "team-a-gpus"


def rules_of(objects: list[dict[str, Any]], kind: str) -> dict[str | None, set[tuple[str, ...]]]:
    """(group, resource, verb) triples each Role or ClusterRole grants, by namespace."""
    return {
        o["metadata"].get("namespace"): {
            (group, resource, verb)
            for rule in o["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }
        for o in objects
        if o["kind"] == kind
    }


NEEDED = {(r.group, r.plural, verb) for r in ALL for verb in r.verbs}
"""Every call the operator makes (tests/kube_emulator.py refuses a call outside ALL)."""


def test_cluster_mode_grants_exactly_the_operator_resources_without_wildcards() -> None:
    objects = render({})
    assert rules_of(objects, "ClusterRole") == {None: NEEDED}
    assert not rules_of(objects, "Role")
    assert not any("*" in triple for triple in NEEDED)


def test_namespaced_mode_grants_roles_in_the_watched_namespaces_only() -> None:
    objects = render({"watchNamespaces": ["team-a", "team-b"]})
    namespaced = {(r.group, r.plural, v) for r in ALL if r.namespaced for v in r.verbs}
    assert rules_of(objects, "Role") == {"team-a": namespaced, "team-b": namespaced}
    assert not [o for o in objects if o["kind"].startswith("Cluster")]
    bindings = [o for o in objects if o["kind"] == "RoleBinding"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"team-a", "team-b"}
    assert {(s["name"], s["namespace"]) for b in bindings for s in b["subjects"]} == {
        (RELEASE, NAMESPACE)
    }


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"operator": {"replicas": "many"}}, "replicas"),
        ({"operator": {"replicas": 2}}, "replicas"),
        ({"watchNamspaces": ["a"]}, "watchNamspaces"),
        ({"minio": {"enabled": "yes"}}, "enabled"),
        ({"storage": {"endpoint": "s3.example.com"}}, "endpoint"),
        ({"defaults": {"pods": {"security": "privileged"}}}, "security"),
    ],
)
def test_the_schema_refuses_bad_values(values: dict[str, Any], says: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=says):
        helm.Chart.load(CHART).validate_schema(values)


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"storage": {"endpoint": "https://s3.example.com"}}, "storage.bucket"),
        (
            {"storage": {"endpoint": "https://s3.example.com", "bucket": "b"}},
            "storage.credentialsSecret",
        ),
        ({"minio": {"enabled": True}, "storage": {"endpoint": "https://s3.example.com"}}, "one"),
    ],
)
def test_an_incomplete_store_fails_with_the_key_to_set(values: dict[str, Any], says: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=says):
        render(values)


def test_bundled_minio_is_the_default_store_with_keys_kept_across_upgrades() -> None:
    objects = by_key(render({"minio": {"enabled": True}}))
    secret = objects[f"Secret/{NAMESPACE}/{RELEASE}-minio"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    template = (CHART / "templates" / "minio.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template
    job = objects[f"Job/{NAMESPACE}/{RELEASE}-minio-bucket"]
    assert "post-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"]
    [deployment] = [o for k, o in objects.items() if k.startswith("Deployment/")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    store = OperatorDefaults.from_env(env_of(container)).storage
    assert store is not None
    assert store.endpoint == f"http://{RELEASE}-minio.{NAMESPACE}.svc:9000"
    assert store.credentials_secret == secret["metadata"]["name"]
    # MinIO's root user is the same key pair the jobs read.
    [minio] = objects[f"StatefulSet/{NAMESPACE}/{RELEASE}-minio"]["spec"]["template"]["spec"][
        "containers"
    ]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in minio["env"] if "valueFrom" in e}
    assert refs == {secret["metadata"]["name"]}


def test_notes_give_the_next_steps() -> None:
    out = helm.Chart.load(CHART).render({}, name=RELEASE, namespace=NAMESPACE)
    notes = out["rlkd-operator/templates/NOTES.txt"]
    assert "kubectl apply" in notes and "kubectl get rlkdjobs -A -w" in notes
    assert "kubectl apply --server-side --force-conflicts -f <chart>/crds/" in notes


def manifests_of(directory: Path) -> str:
    """What directory/rlkd-operator.yaml must hold: its Namespace and the chart rendered with its
    values.yaml, without the labels that say Helm manages it (kubectl or a GitOps tool does)."""
    objects = render(values_of(directory / "values.yaml"))
    for obj in objects:
        for label in HELM_ONLY_LABELS:
            obj["metadata"].get("labels", {}).pop(label, None)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    header = (
        "# Generated by `make generate` from charts/rlkd-operator with "
        f"{directory.name}/values.yaml; do not edit.\n"
    )
    return header + dump_all([namespace, *objects])


@pytest.mark.parametrize("directory", RENDERED_DIRS, ids=lambda p: p.name)
def test_manifests_are_the_chart_rendered_with_their_values(directory: Path) -> None:
    committed = directory / "rlkd-operator.yaml"
    expected = manifests_of(directory)
    if os.environ.get("RLKD_REGENERATE_GOLDEN"):
        committed.write_text(expected)
    assert committed.read_text() == expected, "run `make generate`"


@pytest.mark.parametrize("directory", RENDERED_DIRS, ids=lambda p: p.name)
def test_kustomize_renders_every_install_and_each_object_validates(directory: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], check=True, capture_output=True, text=True
    ).stdout
    objects = by_key([d for d in yaml.safe_load_all(out) if d])
    assert "CustomResourceDefinition//rlkdjobs.rlkd.ai" in objects
    assert f"Deployment/{NAMESPACE}/{RELEASE}" in objects
    for obj in objects.values():
        if obj["kind"] not in CUSTOM_KINDS | {"CustomResourceDefinition"}:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_documented_crd_upgrade_applies_the_chart_crds_as_they_are() -> None:
    """`kubectl apply --server-side -f <chart>/crds/` (README, charts/README.md, NOTES.txt) only
    works on plain objects: no template syntax in crds/, and every file a CRD."""
    command = "kubectl apply --server-side --force-conflicts -f"
    assert f"{command} charts/rlkd-operator/crds/" in (ROOT / "README.md").read_text()
    assert f"{command} rlkd-operator/crds/" in (ROOT / "charts" / "README.md").read_text()
    for path in (CHART / "crds").iterdir():
        assert "{{" not in path.read_text()
        assert {d["kind"] for d in yaml.safe_load_all(path.read_text())} == {
            "CustomResourceDefinition"
        }


def test_namespaced_mode_reads_the_default_store_secret_by_name_alone() -> None:
    """The operator copies the default store's Secret into job namespaces: in namespaced mode it
    may read that one Secret in its own namespace, and nothing else there."""
    store = {"endpoint": "https://s3.example.com", "bucket": "b", "credentialsSecret": "s3-keys"}
    objects = render({"watchNamespaces": ["team-a"], "storage": store})
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    assert set(roles) == {"team-a", NAMESPACE}
    assert roles[NAMESPACE]["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["s3-keys"],
        }
    ]
    [binding] = [
        o for o in objects if o["kind"] == "RoleBinding" and o["metadata"]["namespace"] == NAMESPACE
    ]
    assert binding["roleRef"]["name"] == roles[NAMESPACE]["metadata"]["name"]
    assert rules_of(objects, "Role")["team-a"] >= {
        ("", "secrets", "create"),
        ("", "secrets", "patch"),
    }


def test_the_gpu_tolerations_value_is_typed_as_the_rlkdjob_types_them() -> None:
    """One source: the chart's schema of a toleration must be the CRD's (the typed spec's)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    chart = schema["properties"]["defaults"]["properties"]["gpu"]["properties"]["tolerations"]
    crd = yaml.safe_load(crd_yaml())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = crd["properties"]["spec"]["properties"]["learner"]["properties"]["tolerations"]
    assert chart["maxItems"] == spec["maxItems"]
    for name, node in spec["items"]["properties"].items():
        mine = chart["items"]["properties"][name]
        assert mine.get("enum") == node.get("enum"), name
        assert mine.get("maxLength") == node.get("maxLength"), name
    assert set(chart["items"]["properties"]) == set(spec["items"]["properties"])
