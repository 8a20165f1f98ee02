# closedloop: `make help` lists the targets. Everything runs inside .venv.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
DVC := $(BIN)/dvc
# torch is installed before the project so that the right build is chosen for this machine.
TORCH_VERSION ?= 2.13.0
# Where to get a CPU-only torch on machines without CUDA (PyPI's Linux wheel is the CUDA
# build). Empty: use pip's configured index. Elsewhere: https://download.pytorch.org/whl/cpu
TORCH_CPU_INDEX ?=
STAMP := $(VENV)/.closedloop-installed
# dvc.yaml's commands say `python`: make it the venv's, as `source .venv/bin/activate` would.
export PATH := $(abspath $(BIN)):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: help install repro test test-fast bench lint data clean serve simulate export demo \
	traffic monitor-inputs monitor push-data promote rollback deploy-verify deploy-tag deploy-hook

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "CUDA found: installing torch $(TORCH_VERSION) with CUDA"; \
		$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"; \
	else \
		echo "no CUDA: installing the CPU build of torch $(TORCH_VERSION)"; \
		$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" $(if $(TORCH_CPU_INDEX),--index-url $(TORCH_CPU_INDEX)); \
	fi
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

install: $(STAMP) ## create .venv with torch (CPU build without CUDA) and the project

data: $(STAMP) ## make data/ (DVC-tracked) present: from the DVC cache or remote when it holds files
	@if grep -q 'nfiles: 0' data.dvc; then mkdir -p data; \
	else $(DVC) checkout data.dvc 2>/dev/null || $(DVC) pull data.dvc; fi

repro: data ## install if needed, then run the whole loop: dvc repro
	$(DVC) repro
	@echo ""
	@echo "Results:"
	@echo "  params (composed from conf/)   params.yaml"
	@echo "  dataset snapshot               artifacts/snapshot/"
	@echo "  candidate model + model card   models/candidate/"
	@echo "  metrics                        reports/metrics.json   (dvc metrics show)"
	@echo "  per-example predictions        reports/eval/          (dvc plots show)"

test: data ## run the whole test suite, slow tests included (what CI runs)
	$(BIN)/pytest

test-fast: data ## run the tests that take seconds, not minutes
	$(BIN)/pytest -m "not slow"

bench: data ## run the benchmarks; each prints a ratio measured side by side
	@set -e; for b in benchmarks/bench_*.py; do $(PY) $$b; done

lint: $(STAMP) ## ruff, workflow checks and the other pre-commit hooks on every file
	$(BIN)/pre-commit run --all-files

serve: data ## the reference prediction server on 127.0.0.1:8000 (conf/serve/)
	$(BIN)/closedloop serve

simulate: $(STAMP) ## replay the production period through a running server, with feedback
	$(BIN)/closedloop simulate

export: $(STAMP) ## move new feedback from the store into data/feedback/ and update data.dvc
	$(BIN)/closedloop export

demo: $(STAMP) ## the whole story offline, in a scratch clone under .demo/
	$(BIN)/closedloop demo

push-data: $(STAMP) ## dvc push data and models, when a DVC remote is configured
	@if [ -n "$$($(DVC) remote list)" ]; then $(DVC) push; \
	else echo "no DVC remote configured (dvc remote add -d ...): nothing pushed"; fi

traffic: $(STAMP) ## data/ from DVC plus the newest records from the store ($$CLOSEDLOOP_STORE_URL), for rollout and monitor
	@$(MAKE) --no-print-directory data || echo "data/ is in no DVC cache or remote: the export below brings every record"
	@if [ -n "$$CLOSEDLOOP_STORE_URL" ]; then $(BIN)/closedloop export --no-dvc; \
	else echo "CLOSEDLOOP_STORE_URL is not set: data/feedback/ is read as it is"; fi

monitor-inputs: $(STAMP) ## the eval outputs and training data `closedloop monitor` reads, from the DVC cache or remote
	@$(DVC) checkout -q evaluate collect champion 2>/dev/null || \
	if [ -n "$$($(DVC) remote list)" ]; then $(DVC) pull -q evaluate collect champion; \
	else echo "no DVC copy of reports/eval/ or the training data: the estimate stays uncalibrated, drift is skipped"; fi

monitor: $(STAMP) ## the monitoring page from data/feedback/: reports/monitor.html and reports/monitor.json
	$(BIN)/closedloop monitor

CHANGE ?= local
promote: data ## promote the candidate if reports/gate.json passes for its exact hash
	$(DVC) checkout models/candidate reports/eval 2>/dev/null || $(DVC) pull models/candidate
	$(BIN)/closedloop promote --if-new --change "$(CHANGE)" --body-out reports/promotion.md

TO ?=
rollback: $(STAMP) ## restore the previous production entry (or TO=vX.Y.Z) in the registry
	$(BIN)/closedloop rollback $(if $(TO),--to "$(TO)") --change "$(CHANGE)" --body-out reports/rollback.md

deploy-verify: $(STAMP) ## check the production entry: gate pass, weights match their hash
	$(BIN)/closedloop deploy verify

deploy-tag: $(STAMP) ## tag the production entry in GTO's format and push the tags
	$(BIN)/closedloop deploy tag --push

deploy-hook: $(STAMP) ## run deploy/hook.sh with the verified production model
	$(BIN)/closedloop deploy hook

clean: ## remove generated outputs (the DVC cache keeps them: `dvc checkout` restores)
	rm -rf artifacts models/candidate reports/eval reports/train
