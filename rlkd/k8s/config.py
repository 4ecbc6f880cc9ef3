"""The ConfigMap with what `rlkd train` reads: the resolved job and its DeepSpeed config."""

from __future__ import annotations

import json
from typing import Any

from rlkd.k8s.naming import child_metadata, config_name
from rlkd.spec.deepspeed import deepspeed_config
from rlkd.spec.resource import API_VERSION, KIND, RLKDJob
from rlkd.spec.yamlio import dump_all

MOUNT_DIR = "/etc/rlkd"
"""Where the learner pods mount the ConfigMap."""
JOB_KEY = "job.yaml"
DEEPSPEED_KEY = "deepspeed.json"


def resolved_document(job: RLKDJob) -> dict[str, Any]:
    """The resolved job as an RLKDJob document: every default written out, the store filled in,
    metadata reduced to name and namespace so the ConfigMap changes only when the spec does."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": job.metadata.name, "namespace": job.metadata.namespace},
        "spec": job.spec.to_dict(),
    }


def build_config_map(job: RLKDJob) -> dict[str, Any]:
    """The ConfigMap of a resolved job."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(job, config_name(job), "config"),
        "data": {
            JOB_KEY: dump_all([resolved_document(job)]),
            DEEPSPEED_KEY: json.dumps(deepspeed_config(job.spec), indent=2, sort_keys=True) + "\n",
        },
    }
