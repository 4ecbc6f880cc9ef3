"""The rlkd operator: kopf glue that reconciles RLKDJobs into inference, learners and artifacts.

The decisions live in `rlkd` (spec, builders); this package only talks to the API server.
"""
