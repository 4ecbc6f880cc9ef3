"""`rlkd validate`: exit 0 when valid; exit 1 with one line per problem, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rlkd.cli import main

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "manifests" / "examples" / "paper-qwen2.5-math-7b.yaml"
TINY = ROOT / "manifests" / "examples" / "tiny-cpu.yaml"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(["validate", *args])
    return code, capsys.readouterr().out.splitlines()


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_valid_examples(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, str(PAPER), str(TINY))
    assert code == 0
    assert out == [
        f"{PAPER}: valid (RLKDJob/qwen-math-7b-rlkd-zero)",
        f"{TINY}: valid (RLKDJob/tiny-arithmetic)",
    ]


def test_quiet_prints_nothing_when_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "-q", str(PAPER)) == (0, [])


def test_every_problem_on_its_own_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = PAPER.read_text().replace("learningRate: 5e-5", "learningRate: -1e-5")
    text = text.replace("numGenerations: 4", "numGenerations: 1\n    learningrate: 3")
    path = write(tmp_path, text)
    code, out = run(capsys, path)
    assert code == 1
    assert out == [
        f"{path}: spec.grpo.learningRate: must be > 0 (got -1e-05)",
        f"{path}: spec.grpo.numGenerations: must be >= 2 (got 1)",
        f"{path}: spec.grpo.learningrate: unknown field; did you mean learningRate?",
    ]


def test_one_bad_file_among_good_ones_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = write(tmp_path, TINY.read_text().replace("limit: 64", "limit: 0"))
    code, out = run(capsys, str(TINY), bad)
    assert code == 1
    assert out == [
        f"{TINY}: valid (RLKDJob/tiny-arithmetic)",
        f"{bad}: spec.dataset.limit: must be >= 1 (got 0)",
    ]


def test_multi_document_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    second = (
        TINY.read_text()
        .replace("tiny-arithmetic", "tiny-two")
        .replace("temperature: 1.0", "temperature: -1")
    )
    path = write(tmp_path, TINY.read_text() + "\n---\n" + second + "---\n")
    code, out = run(capsys, path)
    assert code == 1
    assert out == [f"{path}: spec.grpo.temperature: must be > 0 (got -1) [document 2]"]

    path = write(tmp_path, TINY.read_text() + "---\n" + TINY.read_text().replace("tiny-arith", "b"))
    assert run(capsys, path) == (0, [f"{path}: valid (RLKDJob/tiny-arithmetic, RLKDJob/bmetic)"])


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", "empty file: expected at least one RLKDJob document"),
        ("# only a comment\n---\n", "empty file: expected at least one RLKDJob document"),
        (
            "spec: [unclosed\n",
            "invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence)",
        ),
        (
            "spec:\n  a: 1\n  a: 2\n",
            "invalid YAML at line 3, column 3: found duplicate key 'a' (while reading a mapping)",
        ),
        ("- a\n- b\n", "expected an RLKDJob mapping (got a list)"),
        (
            "apiVersion: rlkd.ai/v1\nkind: RLKDJob\n",
            "apiVersion: must be rlkd.ai/v1alpha1 (got 'rlkd.ai/v1')",
        ),
        ("apiVersion: rlkd.ai/v1alpha1\nkind: Job\n", "kind: must be RLKDJob (got 'Job')"),
        ("apiVersion: rlkd.ai/v1alpha1\n", "kind: must be RLKDJob (got null)"),
    ],
)
def test_unreadable_documents(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, line: str
) -> None:
    path = write(tmp_path, text)
    code, out = run(capsys, path)
    assert code == 1
    assert len(out) == 1 and out[0].startswith(f"{path}: {line}")


def test_duplicate_key_names_key_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path, TINY.read_text() + "  grpo:\n    learningRate: 1.0\n")
    assert run(capsys, path) == (
        1,
        [
            f"{path}: invalid YAML at line 51, column 3: found duplicate key 'grpo'"
            " (while reading a mapping)"
        ],
    )


def test_missing_and_binary_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    code, out = run(capsys, missing, str(binary))
    assert code == 1
    assert out == [
        f"{missing}: cannot read the file: No such file or directory",
        f"{binary}: not a UTF-8 text file",
    ]


def test_installed_command_never_shows_a_traceback(tmp_path: Path) -> None:
    rlkd = Path(sys.executable).with_name("rlkd")
    bad = write(tmp_path, "spec: [\n")
    result = subprocess.run([rlkd, "validate", bad, str(PAPER)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stdout.splitlines()[0].startswith(f"{bad}: invalid YAML at line 2")

    result = subprocess.run([rlkd, "validate", str(PAPER)], capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")


def test_validate_and_crd_load_no_heavy_stack() -> None:
    """`rlkd validate` and `rlkd crd` run in CI and GitOps hooks: no ML stack, kopf or S3 SDK."""
    code = (
        "import sys, contextlib, io\n"
        "from rlkd.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(['validate', {str(PAPER)!r}]) == 0 and main(['crd']) == 0\n"
        "heavy = {'torch', 'transformers', 'trl', 'kopf', 'kubernetes', 'minio'}\n"
        "print(sorted(heavy & sys.modules.keys()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


def test_rules_are_reported_beside_field_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Cross-field rules whose fields are valid are checked even when other fields are not,
    at every level (a nested object, the spec, the name)."""
    path = write(
        tmp_path,
        "apiVersion: rlkd.ai/v1alpha1\nkind: RLKDJob\nmetadata:\n  name: Bad_Name\nspec:\n"
        "  student: {model: Qwen/Qwen2.5-Math-7B}\n"
        "  dataset: {uri: s3://data/train.jsonl, limit: 5, fraction: 0.1, seed: -1}\n"
        "  gsrm: {backend: openai, request: {maxTokens: 0}}\n"
        "  grpo: {learningRate: -1, numGenerations: 3}\n"
        "  learner: {deepspeed: {stage: 1, offloadOptimizer: true, offloadParams: 'no'}}\n",
    )
    code, out = run(capsys, path)
    assert code == 1
    assert [line.removeprefix(f"{path}: ") for line in out] == [
        "metadata.name: must be a DNS-1123 label that starts with a letter: lowercase letters,"
        " digits and '-' (it names the PyTorchJob and the Services) (got 'Bad_Name')",
        "spec.dataset.seed: must be >= 0 (got -1)",
        "spec.dataset.fraction: set limit or fraction, not both",
        "spec.gsrm.request.maxTokens: must be >= 1 (got 0)",
        "spec.gsrm.model: is required unless backend is rule",
        "spec.gsrm.url: is required when backend is openai, and only then",
        "spec.grpo.learningRate: must be > 0 (got -1)",
        "spec.grpo.perDeviceTrainBatchSize: times gradientAccumulationSteps must be a multiple of"
        " numGenerations: each learner process scores its own generation batch, and a GRPO group"
        " split across processes cannot be dropped whole when its structure reward fails (e.g."
        " raise gradientAccumulationSteps or lower numGenerations)",
        "spec.learner.deepspeed.offloadParams: must be true or false (got 'no')",
        "spec.learner.deepspeed.offloadOptimizer: needs stage 2 or 3",
        "spec.judge: is required when rewards.structure > 0 (or set rewards.structure to 0)",
    ]
