# csr: every target bootstraps .venv on first use, so on a fresh machine `make test` alone installs and tests.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data/datasets
OUT    ?= results
PROFILE    ?= paper
JOBS       ?= 1
ESC50_ROOT ?=
US8K_ROOT  ?=
BENCH_FLAGS ?=
RUN_FLAGS  = --profile=$(PROFILE) --jobs=$(JOBS) --data_root=$(DATA) --out_dir=$(OUT) \
             $(if $(ESC50_ROOT),--esc50_root=$(ESC50_ROOT)) $(if $(US8K_ROOT),--us8k_root=$(US8K_ROOT))
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv test test-all lint demo data synthetic table1 table2 ablation figure3 tables bench bench-frontend bench-step

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or run: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## test: the README's test command (fast, no network)
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## lint: ruff (pyflakes, pycodestyle, import order, bugbear; ruff.toml) on the whole tree
lint: $(STAMP)
	$(VENV)/bin/ruff check .

## test-all: also the slow tests (every real ESC-10 clip, longer training)
test-all: $(STAMP)
	$(PY) -m pytest -q

## demo: the whole method on the project's own synthetic data, CPU, a few minutes
demo: $(STAMP)
	$(PY) reproduce/demo.py --data_dir=$(DATA)/synthetic --out_dir=$(OUT)

## data: download and verify ESC-50 and UrbanSound8K into $(DATA)
data: $(STAMP)
	$(PY) data/download.py --dataset all --root $(DATA)

## synthetic: the project's own small data sets (ESC-50 and UrbanSound8K layouts)
synthetic: $(STAMP)
	$(PY) data/synthesize.py --out $(DATA)/synthetic --seed 0

## table1 / table2 / ablation / figure3: run the missing runs (PROFILE=paper|quick, JOBS=N), then write the table
table1 table2 ablation figure3: $(STAMP)
	$(PY) reproduce/run_experiment.py --table=$@ $(RUN_FLAGS)

## tables: rewrite every table, Figure 3 and REPORT.md from the finished runs
tables: $(STAMP)
	$(PY) reproduce/make_tables.py --results=$(OUT) --profile=$(PROFILE)

## bench: every benchmark, ratios measured side by side in one run
bench: bench-frontend bench-step

bench-frontend: $(STAMP)
	$(PY) reproduce/bench_frontend.py

## bench-step: train step vs bare backbone (ratio, peak memory), FLOPs per step, projected GPU-hours
bench-step: $(STAMP)
	$(PY) reproduce/bench_step.py $(BENCH_FLAGS)
