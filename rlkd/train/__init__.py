"""The learner: `rlkd train` (launch, the spec as GRPOConfig, the recipe, checkpoints in the
store, the progress document)."""
