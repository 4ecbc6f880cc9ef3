"""manifests/argocd/health.lua, run by a real Lua interpreter (lupa) the way Argo CD runs a health
check (the object as the global `obj`, the script's return value as the health), on sample
statuses of every phase in rlkd.spec.status.PHASES; and its kustomize Component merges it into
argocd-cm unchanged."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

from rlkd.spec.status import PHASES

ARGOCD = Path(__file__).resolve().parents[2] / "manifests" / "argocd"
LUA = (ARGOCD / "health.lua").read_text()
KEY = "resource.customizations.health.rlkd.ai_RLKDJob"
TERMINAL = {"Succeeded": "Healthy", "Failed": "Degraded", "Suspended": "Suspended"}


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = lupa.LuaRuntime()

    def table(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    lua.globals().obj = table(obj)
    result = lua.execute(LUA)
    return dict(result.items())


def test_the_terminal_table_names_only_real_phases() -> None:
    [body] = re.findall(r"local TERMINAL = \{(.*?)\}", LUA, re.S)
    assert dict(re.findall(r"(\w+) = \"(\w+)\"", body)) == TERMINAL
    assert set(TERMINAL) <= set(PHASES)


@pytest.mark.parametrize("phase", PHASES)
def test_every_phase_has_its_health(phase: str) -> None:
    got = health({"status": {"phase": phase}})
    assert got == {"status": TERMINAL.get(phase, "Progressing"), "message": phase}


def test_an_unknown_phase_of_a_newer_operator_is_progressing() -> None:
    assert health({"status": {"phase": "BuildingGSRM"}})["status"] == "Progressing"


def test_no_status_yet_is_progressing() -> None:
    assert health({"metadata": {"name": "demo"}})["status"] == "Progressing"
    assert health({"status": {}})["status"] == "Progressing"


def test_the_first_failing_condition_says_why() -> None:
    status = {
        "phase": "Failed",
        "conditions": [
            {"type": "StoreReady", "status": "True", "message": "reachable"},
            {"type": "Succeeded", "status": "False", "message": "learner pod OOMKilled"},
            {"type": "Running", "status": "False", "message": "not running"},
        ],
    }
    assert health({"status": status}) == {
        "status": "Degraded",
        "message": "Failed: Succeeded: learner pod OOMKilled",
    }


def test_the_component_merges_the_script_into_argocd_cm(tmp_path: Path) -> None:
    argocd_cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "argocd-cm", "namespace": "argocd"},
        "data": {"url": "https://argocd.example.com"},
    }
    (tmp_path / "argocd-cm.yaml").write_text(yaml.safe_dump(argocd_cm))
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"resources": ["argocd-cm.yaml"], "components": [os.path.relpath(ARGOCD, tmp_path)]}
        )
    )
    out = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path)], check=True, capture_output=True, text=True
    ).stdout
    [merged] = yaml.safe_load_all(out)
    assert merged["data"] == {"url": "https://argocd.example.com", KEY: LUA}
