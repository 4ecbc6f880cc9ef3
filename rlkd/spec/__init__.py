"""The RLKDJob spec: the typed model every other part of rlkd reads."""

from rlkd.spec.job import (
    DatasetSpec,
    EvaluationSpec,
    GRPOSpec,
    InferenceSpec,
    LearnerSpec,
    RewardsSpec,
    RLKDJobSpec,
    RolloutSpec,
    StorageSpec,
    StudentSpec,
    TeacherSpec,
)
from rlkd.spec.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION, RLKDJob
from rlkd.spec.status import PHASES, RLKDJobStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PHASES",
    "PLURAL",
    "VERSION",
    "DatasetSpec",
    "EvaluationSpec",
    "GRPOSpec",
    "InferenceSpec",
    "LearnerSpec",
    "RLKDJob",
    "RLKDJobSpec",
    "RLKDJobStatus",
    "RewardsSpec",
    "RolloutSpec",
    "StorageSpec",
    "StudentSpec",
    "TeacherSpec",
]
