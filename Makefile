# Developer entry points. `make test` is the one command CI runs (.ci/run): on a fresh machine it
# builds .venv, installs torch first (pinned: an unpinned torch pulls a multi-GB CUDA build),
# then the project with its extras, lints, and runs every test. Tests start the servers they
# need themselves (an S3 server on 127.0.0.1).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Where torch comes from. Empty: pip's configured indexes (this project's machines hold the CPU
# wheel on local disk). Elsewhere, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_INDEX ?=
EXTRAS ?= train,operator,dev
CRD := manifests/crd/rlkd.ai_rlkdjobs.yaml

.PHONY: test lint format generate clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

test: $(VENV)/.installed lint
	$(BIN)/pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate what derives from the typed spec (a test fails when the committed copy drifts).
generate: $(VENV)/.installed
	$(BIN)/rlkd crd > $(CRD)
	$(BIN)/python -m rlkd.spec.reference > docs/spec-reference.md
	$(BIN)/python -m rlkd_operator.resources > manifests/base/clusterrole.yaml
	RLKD_REGENERATE_GOLDEN=1 $(BIN)/pytest -q tests/unit/test_k8s_render.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
