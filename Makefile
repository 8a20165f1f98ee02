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
# Without CUDA: PyTorch's CPU index serves torch's CPU build (pip's default index serves the
# multi-GB CUDA build on Linux). It is tried first, with a short timeout; when it does not
# answer, torch comes from pip's configured index (set TORCH_CPU_INDEX= empty to skip it).
export TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
export TORCH_INDEX_TIMEOUT ?= 5
STAMP := $(VENV)/.closedloop-installed
# pip prints only its errors; `make install PIP_VERBOSITY=` shows all it does.
PIP_VERBOSITY ?= --quiet --quiet
# --no-compile, then BYTE_COMPILE: pip byte-compiles what it installs on one core (torch
# 38 -> 16 s, the project and its tools 130 -> 88 s without it); compileall does all of it
# on every core at the end (28 s on 2). The .pyc files must exist: every stage is a fresh
# process that imports torch and Lightning, and where PYTHONDONTWRITEBYTECODE is set (as in
# many containers) Python would compile them from source in each one (Lightning 7.2 -> 3.3 s).
PIP := $(PY) -m pip $(PIP_VERBOSITY) --disable-pip-version-check
PIP_INSTALL := $(PIP) install --no-compile
# dvc.yaml's commands say `python`: make it the venv's, as `source .venv/bin/activate` would.
export PATH := $(abspath $(BIN)):$(PATH)
export VIRTUAL_ENV := $(abspath $(VENV))

# Does the CPU index answer (its page for torch), within the timeout?
define TORCH_INDEX_ANSWERS
import os, urllib.request
url = os.environ["TORCH_CPU_INDEX"].rstrip("/") + "/torch/"
urllib.request.urlopen(url, timeout=float(os.environ["TORCH_INDEX_TIMEOUT"]))
endef
# Which build pip installed: PyPI's CUDA wheels depend on nvidia-* packages, CPU wheels do not.
define TORCH_BUILD
import importlib.metadata as m
gpu = any(r.startswith("nvidia") for r in m.requires("torch") or [])
print("install: got torch", m.version("torch"), "(CUDA build)" if gpu else "(CPU build)")
endef
# As pip does, a module this Python cannot compile (torch ships one in 3.12 syntax, under
# torch/testing) is left alone: it fails where it is imported, if it ever is.
define BYTE_COMPILE
import compileall, sysconfig
compileall.compile_dir(sysconfig.get_path("purelib"), quiet=2, workers=0)
endef
export TORCH_INDEX_ANSWERS TORCH_BUILD BYTE_COMPILE

.PHONY: help install repro test test-fast bench lint data clean serve simulate export demo \
	traffic monitor-inputs monitor push-data promote rollback reset-capture deploy-verify deploy-tag deploy-hook lock-check

help: ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x $(PY) ]; then echo "install: creating $(VENV) with $$($(PYTHON) --version)"; $(PYTHON) -m venv $(VENV); fi; \
	trap 'echo "install: failed (make install PIP_VERBOSITY= shows what pip did)" >&2' ERR; \
	$(PIP_INSTALL) --upgrade pip; \
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "install: CUDA found: torch $(TORCH_VERSION) with CUDA from pip's configured index"; \
		$(PIP_INSTALL) "torch==$(TORCH_VERSION)"; \
	elif [ -n "$$TORCH_CPU_INDEX" ] && $(PY) -c "$$TORCH_INDEX_ANSWERS" 2>/dev/null; then \
		echo "install: no CUDA: torch $(TORCH_VERSION), CPU build, from $$TORCH_CPU_INDEX"; \
		$(PIP_INSTALL) "torch==$(TORCH_VERSION)" --index-url "$$TORCH_CPU_INDEX"; \
	else \
		echo "install: no CUDA; $${TORCH_CPU_INDEX:-TORCH_CPU_INDEX (empty)} did not answer in $$TORCH_INDEX_TIMEOUT s: torch $(TORCH_VERSION) from pip's configured index"; \
		$(PIP_INSTALL) "torch==$(TORCH_VERSION)"; \
	fi; \
	$(PY) -c "$$TORCH_BUILD"; \
	echo "install: the project and its dev tools: pip install -e '.[dev]'"; \
	$(PIP_INSTALL) -e ".[dev]"; \
	echo "install: byte-compiling $(VENV) on every core"; \
	$(PY) -c "$$BYTE_COMPILE"; \
	echo "install: done: $(VENV) holds torch, closedloop and its tools"
	@touch $@

install: $(STAMP) ## create .venv with torch (CPU build without CUDA) and the project

# data/raw/ is where your own tables go. Made here, it also keeps data/ from being an empty
# directory, which DVC warns about at every stage that reads it ("'data' is empty."); an empty
# directory holds no file, so data.dvc's hash is the same.
data: $(STAMP) ## make data/ (DVC-tracked) present: from the DVC cache or remote when it holds files
	@if grep -q 'nfiles: 0' data.dvc; then mkdir -p data/raw; \
	else $(DVC) checkout data.dvc 2>/dev/null || $(DVC) pull data.dvc; fi

repro: data ## install if needed, then run the whole loop: dvc repro
	$(DVC) repro
	@echo ""
	@echo "Results (open reports/benchmark.html first):"
	@echo "  reports/benchmark.md    the verdict and champion vs candidate: the PR comment"
	@echo "  reports/benchmark.html  the same, every table in full"
	@echo "  reports/gate.json       the gate verdict and every check, with its reason"
	@echo "  reports/drift.html      Evidently's drift report (reports/drift.json: the scores)"
	@echo "  reports/errors.md       the candidate's mistakes by type, month, slice, confidence"
	@echo "  reports/metrics.json    headline metrics per split: dvc metrics show (per class: reports/eval/)"
	@echo "  models/candidate/       the candidate: weights, config.json, model card (card.md)"
	@echo "  artifacts/snapshot/     the dataset snapshot (schema.json: splits, feedback, lineage)"
	@echo "  params.yaml             the config composed from conf/ (do not edit: edit conf/)"

# Test files run in parallel, each whole on one worker (its module fixtures built once); the
# stages pin torch to one thread (numerics), so one worker per core keeps every core busy.
TEST_WORKERS ?= auto
test: data ## run the whole test suite, slow tests included (what CI runs), one worker per core (at most 4)
	$(BIN)/pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist loadfile

test-fast: data ## run the tests that take seconds, not minutes
	$(BIN)/pytest -m "not slow"

bench: data ## run the benchmarks: progress as they go, a summary table; non-zero when a target is missed
	$(PY) benchmarks/run.py

lint: $(STAMP) ## ruff, workflow checks and the other pre-commit hooks on every file
	$(BIN)/pre-commit run --all-files

# Values a person or a workflow passes (CHANGE=, TO=, HOST=, PORT=) reach closedloop through
# the environment, never as text in a shell line and never expanded by make: a reason such as
# `oops"; rm -rf ~` or `$(shell ...)` stays a reason. Workflows set the CLOSEDLOOP_* variables
# themselves; `make rollback CHANGE="..."` sets them from the command line.
unexport CHANGE TO HOST PORT
ifeq ($(origin CHANGE),command line)
export CLOSEDLOOP_CHANGE = $(value CHANGE)
endif
ifeq ($(origin TO),command line)
export CLOSEDLOOP_ROLLBACK_TO = $(value TO)
endif
ifeq ($(origin HOST),command line)
export CLOSEDLOOP_HOST = $(value HOST)
endif
ifeq ($(origin PORT),command line)
export CLOSEDLOOP_PORT = $(value PORT)
endif

serve: data ## the reference prediction server on 127.0.0.1:8000 (conf/serve/; HOST=, PORT=)
	$(BIN)/closedloop serve

simulate: $(STAMP) ## replay the production period through a running server, with feedback (HOST=, PORT=)
	$(BIN)/closedloop simulate

# What capture leaves behind on this machine: the SQLite store (serve.store_url), and what
# export wrote into data/feedback/ with its watermark. data.dvc goes back to its committed
# state (git), so nothing git tracks is removed.
reset-capture: $(STAMP) ## start capture again: remove the local store, data/feedback/ and its watermark
	$(BIN)/closedloop reset-capture

export: data ## move new feedback from the store into data/feedback/ (past data/'s watermark) and update data.dvc
	$(BIN)/closedloop export

demo: $(STAMP) ## the whole story offline, in a scratch clone under .demo/
	$(BIN)/closedloop demo

push-data: $(STAMP) ## dvc push data and models, when a DVC remote is configured
	@if [ -n "$$($(DVC) remote list)" ]; then $(DVC) push; \
	else echo "no DVC remote configured (dvc remote add -d ...): nothing pushed"; fi

lock-check: $(STAMP) ## after dvc repro: did this machine reproduce the committed dvc.lock? (notes it in reports/benchmark.md)
	$(BIN)/closedloop lock-check --report reports/benchmark.md

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

promote: data ## promote the candidate if reports/gate.json passes for its exact hash (CHANGE="PR #12")
	$(DVC) checkout models/candidate reports/eval 2>/dev/null || $(DVC) pull models/candidate
	$(BIN)/closedloop promote --if-new --body-out reports/promotion.md

rollback: $(STAMP) ## restore the previous production entry (or TO=vX.Y.Z) in the registry (CHANGE="why")
	$(BIN)/closedloop rollback --body-out reports/rollback.md

deploy-verify: $(STAMP) ## check the production entry: gate pass, weights match their hash
	$(BIN)/closedloop deploy verify

deploy-tag: $(STAMP) ## tag the production entry in GTO's format and push the tags
	$(BIN)/closedloop deploy tag --push

deploy-hook: $(STAMP) ## run deploy/hook.sh with the verified production model
	$(BIN)/closedloop deploy hook

# The DVC-cached outputs in dvc.yaml, what `dvc checkout` restores. Outputs with
# `cache: false` (reports/*.json, *.md, reports/train/history.csv) are committed to git: kept.
define CACHED_OUTS
import yaml
for stage in yaml.safe_load(open("dvc.yaml"))["stages"].values():
    for out in stage.get("outs", []):
        path, opts = next(iter(out.items())) if isinstance(out, dict) else (out, {})
        if (opts or {}).get("cache", True):
            print(path)
endef
export CACHED_OUTS

clean: $(STAMP) ## remove the DVC-cached stage outputs (`dvc checkout` restores them); git-tracked files stay
	@set -eo pipefail; $(PY) -c "$$CACHED_OUTS" | while read -r out; do \
		if git ls-files --error-unmatch -- "$$out" >/dev/null 2>&1; then echo "clean: kept $$out (tracked by git)"; \
		elif [ -e "$$out" ]; then rm -rf -- "$$out"; echo "clean: removed $$out"; fi; \
	done
