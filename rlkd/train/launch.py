"""One learner process per GPU, from the variables the Kubeflow Training Operator gives a
PyTorchJob's containers (v1.9: PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR,
PET_MASTER_PORT; pkg/controller.v1/pytorch/envvar.go). With more than one process, `rlkd train`
starts them through torch's elastic launcher (torchrun) and each runs `rlkd train` again as a
rank; a single process trains in place. The operator also sets RANK and WORLD_SIZE, but per pod,
not per process: only torchrun's own children carry per-process ones."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rlkd.errors import RLKDError

WORKER_ENV = "TORCHELASTIC_RUN_ID"
"""Set by torchrun in the processes it starts: such a process is a rank, not a launcher."""
DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class Topology:
    nnodes: int = 1
    nproc_per_node: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def topology(env: Mapping[str, str]) -> Topology:
    """The launch the environment asks for (one process on one node when it asks for none)."""

    def number(name: str, default: int) -> int:
        value = env.get(name, "")
        if not value:
            return default
        try:
            return int(value)
        except ValueError:
            raise RLKDError(
                f"{name}={value!r} is not a whole number (the Training Operator sets it from "
                "the PyTorchJob's nprocPerNode and replicas)"
            ) from None

    return Topology(
        nnodes=number("PET_NNODES", 1),
        nproc_per_node=number("PET_NPROC_PER_NODE", 1),
        node_rank=number("PET_NODE_RANK", 0),
        master_addr=env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR") or "127.0.0.1",
        master_port=number("PET_MASTER_PORT", number("MASTER_PORT", DEFAULT_MASTER_PORT)),
    )


def is_rank(env: Mapping[str, str]) -> bool:
    """This process was started by torchrun as one rank."""
    return WORKER_ENV in env


def torchrun_arguments(topo: Topology, argv: Sequence[str]) -> list[str]:
    """torchrun's command line that starts `rlkd <argv>` once per process of this node."""
    return [
        f"--nnodes={topo.nnodes}",
        f"--nproc-per-node={topo.nproc_per_node}",
        f"--node-rank={topo.node_rank}",
        f"--master-addr={topo.master_addr}",
        f"--master-port={topo.master_port}",
        "--module",
        "rlkd.cli",
        *argv,
    ]


def launch(topo: Topology, argv: Sequence[str]) -> int:
    """Run torchrun for `argv` and wait; the exit status of the ranks."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    try:
        run(parse_args(torchrun_arguments(topo, argv)))
    except ChildFailedError as error:
        failures = ", ".join(f"rank {r}: exit {f.exitcode}" for r, f in error.failures.items())
        print(f"rlkd train: a learner process failed ({failures})", flush=True)
        return 1
    return 0
