"""Building a GSRM (spec.gsrm.build), as the paper does: an annotator LLM decomposes the
teacher's reasoning paths (`rlkd annotate`), an instruct model is fine-tuned on those
decompositions (`rlkd train-gsrm`), and a quality gate compares the result with held-out
annotations (`rlkd eval-gsrm`). Everything lives under the run's `gsrm-build/` prefix."""
