"""What `rlkd render` prints for every shipped example: equal to its golden file, accepted by the
Kubernetes schemas (kubernetes-validate --strict for built-in kinds, the vendored Kubeflow CRD for
the PyTorchJob), and a ConfigMap that `rlkd train` reads back as the same job.

Regenerate the golden files after an intended change: `make generate` (it runs this module with
RLKD_REGENERATE_GOLDEN=1), then review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rlkd.cli import main
from rlkd.k8s import build_children
from rlkd.k8s.config import JOB_KEY
from rlkd.k8s.render import render_file
from rlkd.spec.job import HubSpec, NetworkSpec, PodSettings
from rlkd.spec.validate import check_file, load_job, parse_job
from rlkd.spec.yamlio import load_all
from tests.crdcheck import crd_errors
from tests.jobs import DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "data" / "golden"
PYTORCHJOB_CRD = yaml.safe_load(
    (ROOT / "tests" / "data" / "kubeflow" / "kubeflow.org_pytorchjobs.yaml").read_text()
)
KUBERNETES_VERSION = "1.30"
"""The oldest Kubernetes the children must be valid for."""
STORE_ENV = {
    "RLKD_DEFAULT_STORAGE_ENDPOINT": DEFAULTS.storage.endpoint,
    "RLKD_DEFAULT_STORAGE_BUCKET": DEFAULTS.storage.bucket,
    "RLKD_DEFAULT_STORAGE_CREDENTIALS_SECRET": DEFAULTS.storage.credentials_secret,
    "RLKD_OPERATOR_NAMESPACE": DEFAULTS.namespace,
    "RLKD_TRAINER_IMAGE": DEFAULTS.trainer_image,
    "RLKD_VLLM_IMAGE": DEFAULTS.vllm_image,
}


def children_of(path: Path) -> list[dict[str, Any]]:
    return build_children(load_job(path), DEFAULTS).all()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_renders_as_its_golden_file(path: Path) -> None:
    golden = GOLDEN / path.name
    rendered = render_file(path, DEFAULTS)
    if os.environ.get("RLKD_REGENERATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.read_text() == rendered, f"regenerate with `make generate` if intended: {golden}"


def test_every_golden_file_has_its_example() -> None:
    assert sorted(p.name for p in GOLDEN.glob("*.yaml")) == [p.name for p in EXAMPLES]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_built_in_children_pass_kubernetes_validate_strict(path: Path) -> None:
    for child in children_of(path):
        if child["kind"] == "PyTorchJob":
            # The CRD's pod template is checked by the CRD below; the Kubernetes schema checks it
            # strictly as what it becomes, a PodTemplate.
            for replica in child["spec"]["pytorchReplicaSpecs"].values():
                child = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": "learner"},
                    "template": replica["template"],
                }
                kubernetes_validate.validate(child, KUBERNETES_VERSION, strict=True)
        else:
            kubernetes_validate.validate(child, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_pytorchjob_matches_the_kubeflow_crd(path: Path) -> None:
    """Every PyTorchJob: the learner's, and a GSRM build's."""
    pytorchjobs = [c for c in children_of(path) if c["kind"] == "PyTorchJob"]
    assert pytorchjobs
    for pytorchjob in pytorchjobs:
        assert crd_errors(pytorchjob, PYTORCHJOB_CRD) == []


def test_crd_check_rejects_a_misspelt_pytorchjob_field() -> None:
    learner = next(c for c in children_of(EXAMPLES[0]) if c["kind"] == "PyTorchJob")
    learner["spec"]["runPolicy"]["suspended"] = True
    assert [e.path for e in crd_errors(learner, PYTORCHJOB_CRD)] == ["spec.runPolicy"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_configmap_holds_the_resolved_job(path: Path) -> None:
    job = load_job(path)
    config = build_children(job, DEFAULTS).config
    [doc] = load_all(config["data"][JOB_KEY])
    resolved = parse_job(doc)
    # The examples set no pods, hub or network: the operator's defaults, written out.
    resolved_pods = PodSettings(image_pull_secrets=[], security="restricted")
    assert resolved.spec == job.spec.model_copy(
        update={
            "storage": job.spec.storage
            or DEFAULTS.storage.model_copy(
                update={"credentials_secret": f"{job.metadata.name}-store-credentials"}
            ),
            "pods": resolved_pods,
            "hub": HubSpec(),
            "network": NetworkSpec(),
        }
    )
    assert resolved.metadata.name == job.metadata.name


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_cli_render_prints_the_golden_file(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in STORE_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["render", str(path)]) == 0
    assert capsys.readouterr().out == (GOLDEN / path.name).read_text()


def test_cli_render_of_a_bad_file_prints_what_validate_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = ROOT / "tests" / "data" / "invalid" / "negative-learning-rate.yaml"
    assert main(["render", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == check_file(path)[1]


def test_cli_render_without_a_store_says_how_to_give_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in STORE_ENV:
        monkeypatch.delenv(name, raising=False)
    path = ROOT / "manifests" / "examples" / "tiny-cpu.yaml"
    assert main(["render", str(path)]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"{path}: spec.storage: is required")
    assert "RLKD_DEFAULT_STORAGE_ENDPOINT" in line


def test_render_loads_no_operator_framework_and_no_ml_stack() -> None:
    script = (
        "import sys\n"
        "from rlkd.cli import main\n"
        f"main(['render', {str(EXAMPLES[0])!r}])\n"
        "heavy = {'kopf', 'torch', 'trl', 'vllm'} & {m.split('.')[0] for m in sys.modules}\n"
        "print('HEAVY', sorted(heavy), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert "HEAVY []" in result.stderr
    assert "kind: PyTorchJob" in result.stdout
