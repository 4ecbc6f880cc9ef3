"""The structure-reward engine: GSRM step decomposition, the judge, and the RLKD reward."""

from rlkd.gsrm.reward import structure_reward
from rlkd.gsrm.steps import parse_steps
from rlkd.gsrm.types import Step

__all__ = ["Step", "parse_steps", "structure_reward"]
