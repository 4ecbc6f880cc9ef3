"""The rewards of one job, built from its spec in one place: the reward functions and weights
`spec.rewards` enables, with the structure engine's backends as the spec names them (a vllm
backend at its `RLKD_<ROLE>_URL`) and its teacher cache on the run's store. `rlkd train`,
`rlkd eval`, the benchmarks and the tests all build them here. A transformers GSRM or judge
kept in the store is loaded through `local` (rlkd.models.model_loader)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from rlkd.errors import SpecError
from rlkd.gsrm.backends import LocalModel, build_decomposer, build_judge
from rlkd.gsrm.engine import StructureEngine
from rlkd.rewards import RewardFunction, StructureReward, reward_functions
from rlkd.spec.job import RLKDJobSpec
from rlkd.store.base import Store


@dataclass
class Rewards:
    """What the learner hands TRL, built from a job in one place (`build_rewards`)."""

    functions: list[RewardFunction]
    weights: list[float]
    structure: StructureReward | None
    """The structure reward, for its error counts; None when its weight is 0."""

    def close(self) -> None:
        """Close the reward engine's connections (at the end of a run)."""
        if self.structure is not None:
            self.structure.close()


def build_structure_engine(
    spec: RLKDJobSpec,
    store: Store | None,
    env: Mapping[str, str] = os.environ,
    *,
    local: LocalModel | None = None,
) -> StructureEngine:
    """The GSRM and the judge the spec names, with the teacher cache on `store` (the run's)."""
    if spec.gsrm is None or spec.judge is None:
        raise SpecError(
            [
                "spec.gsrm and spec.judge: are required for the structure reward (or set "
                "rewards.structure to 0)"
            ]
        )
    return StructureEngine(
        build_decomposer(spec.gsrm, "gsrm", env, local=local),
        build_judge(spec.judge, "judge", env, local=local),
        store,
    )


def build_rewards(
    spec: RLKDJobSpec,
    store: Store | None,
    env: Mapping[str, str] = os.environ,
    *,
    local: LocalModel | None = None,
) -> Rewards:
    """The job's reward functions and weights, with the structure engine's backends as the
    spec says (a vllm backend at its RLKD_<ROLE>_URL) and its teacher cache on `store`."""
    engine = None
    if spec.rewards.structure > 0:
        engine = build_structure_engine(spec, store, env, local=local)
    functions, weights = reward_functions(spec, structure=engine)
    structure = next((f for f in functions if isinstance(f, StructureReward)), None)
    return Rewards(functions, weights, structure)
