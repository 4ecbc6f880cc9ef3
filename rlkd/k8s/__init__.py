"""Pure builders: an RLKDJob in, the Kubernetes objects it becomes out (vLLM Deployments and
Services, the learner's PyTorchJob, the ConfigMap with the resolved job). No network, no kopf."""

from rlkd.k8s.children import Children, InferenceChild, build_children
from rlkd.k8s.defaults import OperatorDefaults
from rlkd.k8s.inference import inference_roles
from rlkd.k8s.naming import (
    config_name,
    inference_name,
    labels,
    learner_name,
    owner_references,
    prepare_name,
    selector_labels,
    service_url,
)
from rlkd.spec.runtime import endpoint_env

__all__ = [
    "Children",
    "InferenceChild",
    "OperatorDefaults",
    "build_children",
    "config_name",
    "endpoint_env",
    "inference_name",
    "inference_roles",
    "labels",
    "learner_name",
    "owner_references",
    "prepare_name",
    "selector_labels",
    "service_url",
]
