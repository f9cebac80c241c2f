# The two commands of the README: `make demo` (set up, then run the whole life cycle) and
# `make test` (set up, then run every test, slow ones included). `make ui` opens the web UI.
PY := .venv/bin/python
export CRUCIBLE_HOME ?= $(CURDIR)/.crucible
export DAGSTER_HOME ?= $(CRUCIBLE_HOME)/dagster_home
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test test-fast lint ui bench

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m crucible_assets.demo

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(PY) -m ruff check .

ui: setup
	$(PY) -m crucible_assets.instance && .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1

bench: setup
	$(PY) bench/bench_metrics.py
	$(PY) bench/bench_sft.py
