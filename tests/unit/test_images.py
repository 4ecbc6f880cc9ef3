"""Every image and command that the chart, the builders and the docs name is one that
images/*/Dockerfile produces: the names (IMAGE_REGISTRY/rlkd-<dir>), the tags (the package
version), the entrypoints and the commands the pods run; and the Dockerfiles follow the rules
(pinned bases, non-root USER, the one extra each needs, a .dockerignore)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from rlkd import __version__
from rlkd.cli import build_parser
from rlkd.k8s import build_children
from rlkd.k8s.defaults import IMAGE_REGISTRY, TRAINER_IMAGE, VLLM_IMAGE, OperatorDefaults
from rlkd.spec.validate import load_job

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {f"rlkd-{p.parent.name}": p for p in sorted((ROOT / "images").glob("*/Dockerfile"))}
CHART_VALUES = yaml.safe_load((ROOT / "charts" / "rlkd-operator" / "values.yaml").read_text())
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "images").glob("**/*")),
    *sorted((ROOT / "charts").glob("**/*.*")),
    *sorted((ROOT / "manifests").glob("**/*.yaml")),
    ROOT / "rlkd" / "k8s" / "defaults.py",
]
REFERENCE = re.compile(
    re.escape(IMAGE_REGISTRY) + r"/([\w.-]+?)(?::([\w.<>-]+))?(?=[\s`'\")\]|,]|$)"
)


def instruction(dockerfile: Path, name: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in dockerfile.read_text().splitlines()
        if line.startswith(name + " ")
    ]


def test_the_images_are_the_operator_and_the_trainer() -> None:
    assert set(DOCKERFILES) == {"rlkd-operator", "rlkd-trainer"}


def test_every_image_reference_is_a_dockerfile_at_the_package_version() -> None:
    found = set()
    for path in DOCS:
        if not path.is_file():
            continue
        for name, tag in REFERENCE.findall(path.read_text()):
            assert name in DOCKERFILES, f"{path}: {IMAGE_REGISTRY}/{name} has no images/ Dockerfile"
            assert tag in ("", __version__) or tag.startswith("<"), f"{path}: tag {tag}"
            found.add(name)
    assert found == set(DOCKERFILES)


def test_the_chart_and_the_builders_name_those_images() -> None:
    operator, defaults = CHART_VALUES["operator"]["image"], CHART_VALUES["defaults"]
    assert operator["repository"] == f"{IMAGE_REGISTRY}/rlkd-operator"
    assert defaults["trainerImage"]["repository"] == f"{IMAGE_REGISTRY}/rlkd-trainer"
    assert operator["tag"] == defaults["trainerImage"]["tag"] == ""  # the chart's appVersion
    assert f"{IMAGE_REGISTRY}/rlkd-trainer:{__version__}" == TRAINER_IMAGE
    assert defaults["vllmImage"] == VLLM_IMAGE


def test_the_trainer_installs_the_vllm_of_the_inference_image() -> None:
    [arg] = [a for a in instruction(DOCKERFILES["rlkd-trainer"], "ARG") if "VLLM" in a]
    assert "v" + arg.split("=")[1] == VLLM_IMAGE.split(":")[1]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_each_dockerfile_is_pinned_non_root_with_the_rlkd_entrypoint(image: str) -> None:
    dockerfile = DOCKERFILES[image]
    [base] = [a.split("=", 1)[1] for a in instruction(dockerfile, "ARG") if "PYTHON_IMAGE" in a]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base)
    assert instruction(dockerfile, "FROM")[-1] == "${PYTHON_IMAGE}"
    [user] = instruction(dockerfile, "USER")
    assert int(user.split(":")[0]) > 0
    assert json.loads(instruction(dockerfile, "ENTRYPOINT")[0]) == ["rlkd"]
    extra = image.removeprefix("rlkd-").replace("trainer", "train")
    assert f'pip install --no-cache-dir --no-compile ".[{extra}]"' in dockerfile.read_text()
    assert not re.search(r"(?i)(ENV|ARG)\s+\S*(TOKEN|SECRET|PASSWORD|KEY)", dockerfile.read_text())
    command = json.loads(instruction(dockerfile, "CMD")[0])
    assert build_parser().parse_args(command).command == extra


def test_the_build_context_is_the_sources_only() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines and {"!pyproject.toml", "!rlkd/", "!operator/"} <= set(lines)


def test_every_builder_command_is_one_the_images_have() -> None:
    defaults = OperatorDefaults()
    parser = build_parser()
    seen = set()
    for example in sorted((ROOT / "manifests" / "examples").glob("*.yaml")):
        job = load_job(example)
        if job.spec.storage is None:
            continue
        for child in build_children(job, defaults).all():
            for pod in _pod_specs(child):
                for container in pod.get("initContainers", []) + pod["containers"]:
                    image, command = container["image"], container.get("command", [])
                    if image == VLLM_IMAGE:
                        assert command[:2] == ["vllm", "serve"]  # the upstream image's CLI
                        continue
                    assert image == TRAINER_IMAGE
                    if command[0] == "python":  # the venv's interpreter, first on PATH
                        continue
                    if command[:2] == ["sh", "-c"]:  # a GSRM build's Master: train, then gate
                        lines = [part.split() for part in command[2].split("&&")]
                        commands = [w[1:] if w[0] == "exec" else w for w in lines]
                    else:
                        commands = [command + container.get("args", [])]
                    for words in commands:
                        assert words[0] == "rlkd"
                        parser.parse_args(words[1:])
                        seen.add(words[1])
    assert {"train", "prepare", "annotate", "train-gsrm", "eval-gsrm"} <= seen


def _pod_specs(child: dict) -> list[dict]:
    spec = child.get("spec", {})
    if child["kind"] == "PyTorchJob":
        return [r["template"]["spec"] for r in spec["pytorchReplicaSpecs"].values()]
    if "template" in spec:
        return [spec["template"]["spec"]]
    return []
