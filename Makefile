# kafka-sidecar — `make help` lists the targets by category.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST := $(BIN)/pytest
BROKERS ?= 1
# Runs of each fault in `make chaos`.
REPEATS ?= 2
# 1: the real node (kubelet, containerd; needs root). 0: Kafka + etcd + kube-apiserver on 127.0.0.1.
NODE ?= 1
export NODE
export GOTOOLCHAIN := local

##@ Getting started
.PHONY: demo
demo: venv localenv-install ## The product on the local environment: rollout 0 -> 50 -> 100%, with a chart
	$(PY) examples/demo.py

.PHONY: help
help: ## Show this list
	@awk 'BEGIN {FS = ":.*##"} /^##@/ {printf "\n\033[1m%s\033[0m\n", substr($$0, 5)} \
	  /^[a-zA-Z0-9_-]+:.*##/ {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv with the project (editable) and the dev tools

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@# localenv/ is test and demo infrastructure: importable in the dev venv, never in the wheel.
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], \
	  "kafka_sidecar_localenv.pth").write_text("$(CURDIR)/localenv\n")'
	touch $@

##@ Quality
.PHONY: lint
lint: venv proto-check ## ruff (lint + format check), mypy --strict, import contracts, proto drift
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict api client sidecar operator localenv tests bench examples chaos
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile.sidecar Dockerfile.operator

.PHONY: fmt
fmt: venv ## Format the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

##@ API
PROTO := protos/kafka_sidecar_api/v1/sidecar.proto
.PHONY: proto
proto: venv ## Regenerate the gRPC code in api/kafka_sidecar_api from protos/
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m grpc_tools.protoc -Iprotos --python_out=api --mypy_out=api \
	  --grpc_python_out=api --mypy_grpc_out=api $(PROTO)

.PHONY: proto-check
proto-check: venv ## Fail when the checked-in generated code differs from what `make proto` makes
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) -m grpc_tools.protoc -Iprotos --python_out=$$tmp --mypy_out=$$tmp \
	  --grpc_python_out=$$tmp --mypy_grpc_out=$$tmp $(PROTO) && \
	diff -ru $$tmp/kafka_sidecar_api/v1 api/kafka_sidecar_api/v1 --exclude=__init__.py \
	  --exclude=__pycache__ || { echo "generated code is stale: run 'make proto'"; exit 1; }

##@ Tests
.PHONY: test
test: venv localenv-install ## Every tier: unit, integration, e2e (real Kafka, kube-apiserver, kubelet), chaos (short)
	$(PYTEST) tests/unit tests/integration tests/e2e
	@# Its own session: its node has three brokers, and one node at a time fits on a machine.
	$(PYTEST) tests/chaos

.PHONY: test-unit
test-unit: venv ## Unit tests only: nothing running
	$(PYTEST) tests/unit

.PHONY: test-integration
test-integration: venv localenv-install ## Integration tests against the real Kafka and kube-apiserver
	$(PYTEST) tests/integration

.PHONY: test-e2e
test-e2e: venv localenv-install ## End-to-end tests: the operator and sample apps on the real node
	$(PYTEST) tests/e2e

.PHONY: chaos
chaos: venv localenv-install ## Faults under load on the real node, each repeated: chaos-output/report.md
	$(PY) -m chaos --out chaos-output --repeats $(REPEATS)

##@ Benchmarks
.PHONY: bench
bench: venv localenv-install ## Measure events/s, produce() cost and broker connections: bench/results/
	$(PY) bench/data_path.py --out bench/results
	$(PY) -m bench.fleet --out bench/results --variant KAFKA_SIDECAR_TRANSPORT=grpc \
	  --knee 2000,4000,8000,16000,24000
	$(PY) bench/operator.py --pods 10000 --policies 100 --out bench/results

.PHONY: bench-smoke
bench-smoke: venv localenv-install ## A tiny run of the benchmarks (CI runs it so they cannot rot)
	$(PY) -m bench.fleet --smoke --out bench/results/smoke
	$(PY) bench/operator.py --pods 50 --out bench/results/smoke

##@ Deployment
.PHONY: kind-deploy
kind-deploy: ## Build both images and deploy to a kind cluster (needs Docker; CERT_MANAGER=0 to skip it)
	hack/kind-up.sh

##@ Local environment (real Kafka and a real single-node Kubernetes cluster)
.PHONY: localenv-install
localenv-install: venv ## Host packages (apt), Kafka, Kubernetes binaries and images into ~/.cache/kafka-sidecar
	$(PY) -m kafka_sidecar_localenv install

.PHONY: localenv-up
localenv-up: localenv-install ## Start the local environment (BROKERS=3: three Kafka nodes; NODE=0: no kubelet)
	$(PY) -m kafka_sidecar_localenv up --brokers $(BROKERS)

.PHONY: localenv-env
localenv-env: ## Print shell exports (KUBECONFIG, kubectl on PATH) for the running environment; use with eval
	@$(PY) -m kafka_sidecar_localenv env

.PHONY: localenv-down
localenv-down: venv ## Stop everything localenv-up started
	$(PY) -m kafka_sidecar_localenv down

.PHONY: clean
clean: ## Remove the venv and build outputs (the component cache in ~/.cache stays)
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
