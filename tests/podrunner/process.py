"""One container as one local process, in a process group of its own: what a container's cgroup
is on a node. Signals go to the whole group, and a container that ends takes its group with it
(a vLLM server's engine processes, torchrun's ranks)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from pathlib import Path

from tests.podrunner.status import now


class ContainerProcess:
    """A started container: its process group (the pid), exit code once it ended."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self._process = process
        self.log = log

    @classmethod
    async def start(
        cls, argv: list[str], env: Mapping[str, str], cwd: Path, log: Path, note: str
    ) -> ContainerProcess:
        """Start `argv` with exactly `env` in `cwd`, its output appended to `log` after a line
        that says which start this is (`note`)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"--- {now()} {note}: {' '.join(argv)}\n".encode())
            out.flush()
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=dict(env),
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        return cls(process, log)

    @property
    def pid(self) -> int:
        """The container's main process, leader of its process group."""
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        """Exit code once the main process ended (-N: killed by signal N), else None."""
        return self._process.returncode

    def group_alive(self) -> bool:
        """Any process of the group still runs (the main one, or what it started); zombies
        waiting for their parent to reap them do not count."""
        return bool(group_members(self.pid))

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to every process of the group."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    async def ended(self) -> int:
        """Wait for the main process to end, then end the rest of its group (a container that
        exits leaves nothing behind); its exit code."""
        code = await self._process.wait()
        self.signal(signal.SIGKILL)
        return code

    async def stop(self, grace_seconds: float) -> int:
        """As the kubelet stops a container: SIGTERM to the group, SIGKILL after the grace."""
        if self.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(self._process.wait()), grace_seconds)
            except TimeoutError:
                self.signal(signal.SIGKILL)
        code = await self.ended()
        while self.group_alive():  # its children, reparented, die a moment after the SIGKILL
            await asyncio.sleep(0.05)
        return code


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
    return members
