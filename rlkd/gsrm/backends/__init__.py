"""Decomposer and Judge backends: openai (vLLM or any OpenAI-compatible server),
transformers (in-process) and rule (deterministic)."""
