"""Where this learner process runs, read from the machine: a GPU or not, its rank among the
learner processes, and the DeepSpeed file (the operator's ConfigMap, else written here from the
spec). Shared by `rlkd train` and `rlkd train-gsrm`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from rlkd.spec.deepspeed import deepspeed_config
from rlkd.spec.job import RLKDJobSpec
from rlkd.spec.runtime import DEEPSPEED_FILE_ENV
from rlkd.train.config import Placement
from rlkd.train.launch import is_rank


def placement(
    spec: RLKDJobSpec, workdir: Path, env: Mapping[str, str], *, rollout_url: str | None = None
) -> Placement:
    """This process's Placement; checkpoints are saved below `workdir/checkpoints`."""
    import torch

    deepspeed_file = env.get(DEEPSPEED_FILE_ENV)
    if spec.learner.deepspeed.stage > 0 and not deepspeed_file:
        # One machine: the same configuration the operator puts in the ConfigMap.
        path = workdir / "deepspeed.json"
        path.write_text(json.dumps(deepspeed_config(spec)))
        deepspeed_file = str(path)
    if "tensorboard" in spec.learner.report_to:
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(workdir / "tensorboard"))
    return Placement(
        output_dir=str(workdir / "checkpoints"),
        cuda=torch.cuda.is_available(),
        deepspeed_file=deepspeed_file,
        rollout_url=rollout_url,
        processes=int(env.get("WORLD_SIZE", "1")) if is_rank(env) else 1,
    )
