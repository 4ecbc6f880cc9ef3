"""manifests/base: it renders with the machine's kubectl, its built-in objects are valid, its
ClusterRole is exactly what rlkd_operator.resources lists, and the Deployment runs the operator
the way the CLI and the peering settings expect."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rlkd.cli import build_parser
from rlkd_operator.resources import cluster_role
from rlkd_operator.settings import PEERING_NAME

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"
KUBERNETES_VERSION = "1.30"


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], check=True, capture_output=True, text=True
    ).stdout
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(out)}


def test_base_installs_the_crds_the_peering_rbac_and_the_operator(rendered) -> None:
    assert set(rendered) == {
        "Namespace/rlkd-system",
        "CustomResourceDefinition/rlkdjobs.rlkd.ai",
        "CustomResourceDefinition/clusterkopfpeerings.kopf.dev",
        "CustomResourceDefinition/kopfpeerings.kopf.dev",  # for `rlkd operator -n NS`
        f"ClusterKopfPeering/{PEERING_NAME}",
        "ServiceAccount/rlkd-operator",
        "ClusterRole/rlkd-operator",
        "ClusterRoleBinding/rlkd-operator",
        "Deployment/rlkd-operator",
    }


def test_cluster_role_is_generated_from_the_operator_code() -> None:
    committed = yaml.safe_load((BASE / "clusterrole.yaml").read_text())
    assert committed == cluster_role(), "run `make generate`"
    for rule in committed["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


@pytest.mark.parametrize(
    "name",
    [
        "Namespace/rlkd-system",
        "ServiceAccount/rlkd-operator",
        "ClusterRole/rlkd-operator",
        "ClusterRoleBinding/rlkd-operator",
        "Deployment/rlkd-operator",
        "CustomResourceDefinition/clusterkopfpeerings.kopf.dev",
        "CustomResourceDefinition/kopfpeerings.kopf.dev",
    ],
)
def test_built_in_objects_pass_kubernetes_validate_strict(rendered, name: str) -> None:
    kubernetes_validate.validate(rendered[name], KUBERNETES_VERSION, strict=True)


def test_the_deployment_runs_one_peered_operator_with_probes_on_the_cli_ports(rendered) -> None:
    deployment = rendered["Deployment/rlkd-operator"]
    assert (deployment["spec"]["replicas"], deployment["spec"]["strategy"]["type"]) == (
        1,
        "Recreate",
    )
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "operator" and args.all_namespaces and not args.standalone
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert f":{ports['healthz']}{container['livenessProbe']['httpGet']['path']}" in args.liveness
    assert ports["metrics"] == args.metrics_port
    binding = rendered["ClusterRoleBinding/rlkd-operator"]
    service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"][0]["name"] == service_account
