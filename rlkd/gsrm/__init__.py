"""The structure-reward engine: GSRM step decomposition, the judge, and the RLKD reward."""
