"""rlkd: RLKD reasoning distillation, declared as one RLKDJob, run on Kubernetes or one machine."""

__version__ = "0.1.0"
