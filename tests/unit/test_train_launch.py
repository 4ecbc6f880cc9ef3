"""One process per GPU from the Training Operator's variables (kubeflow/training-operator v1.9
envvar.go: PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT)."""

from __future__ import annotations

import pytest

from rlkd.errors import RLKDError
from rlkd.train.launch import Topology, is_rank, topology, torchrun_arguments

POD = {
    "PET_NNODES": "2",
    "PET_NPROC_PER_NODE": "4",
    "PET_NODE_RANK": "1",
    "PET_MASTER_ADDR": "demo-master-0",
    "PET_MASTER_PORT": "23456",
    # Set per pod by the operator, not per process: never used as this process's rank.
    "RANK": "1",
    "WORLD_SIZE": "8",
}


def test_a_pods_variables_give_the_node_topology() -> None:
    topo = topology(POD)
    assert topo == Topology(2, 4, 1, "demo-master-0", 23456)
    assert topo.world_size == 8


def test_no_variables_is_one_process_on_one_node() -> None:
    assert topology({}).world_size == 1


def test_torchrun_runs_rlkd_train_once_per_process() -> None:
    args = torchrun_arguments(topology(POD), ["train", "--job", "/etc/rlkd/job.yaml"])
    assert args == [
        "--nnodes=2",
        "--nproc-per-node=4",
        "--node-rank=1",
        "--master-addr=demo-master-0",
        "--master-port=23456",
        "--module",
        "rlkd.cli",
        "train",
        "--job",
        "/etc/rlkd/job.yaml",
    ]


def test_a_torchrun_child_is_a_rank_and_a_pod_is_not() -> None:
    assert not is_rank(POD)
    assert is_rank({**POD, "TORCHELASTIC_RUN_ID": "x", "LOCAL_RANK": "0"})


def test_a_broken_variable_says_where_it_comes_from() -> None:
    with pytest.raises(RLKDError, match="PET_NPROC_PER_NODE='auto' is not a whole number"):
        topology({"PET_NPROC_PER_NODE": "auto"})
