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
SEEDS      ?= 0
BENCH_FLAGS ?=
# RUNS_PER_GPU=K: K concurrent runs on each GPU; EXECUTOR=ray (with RAY_ADDRESS=host:port): the runs as Ray tasks.
RUNS_PER_GPU ?=
EXECUTOR   ?= local
RAY_ADDRESS ?=
PREFLIGHT_FLAGS ?=
# TEST_WORKERS=N: pytest-xdist processes for make test / test-all (2: the tests' TensorFlow work keeps
# two cores busy; each worker holds its own TensorFlow, ~1.5 GB). TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTEST     = $(PY) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
RUN_FLAGS  = --profile=$(PROFILE) --jobs=$(JOBS) --seeds=$(SEEDS) --data_root=$(DATA) --out_dir=$(OUT) \
             $(if $(ESC50_ROOT),--esc50_root=$(ESC50_ROOT)) $(if $(US8K_ROOT),--us8k_root=$(US8K_ROOT))
RUN_FLAGS += --executor=$(EXECUTOR) $(if $(RUNS_PER_GPU),--runs_per_gpu=$(RUNS_PER_GPU)) \
             $(if $(RAY_ADDRESS),--ray_address=$(RAY_ADDRESS))
# VERBOSE=1 shows TensorFlow's start-up lines and XLA's log lines, hidden by default (csr/cli/quiet.py).
VERBOSE    ?=
export CSR_VERBOSE = $(VERBOSE)

.PHONY: venv test test-all lint demo data synthetic table1 table2 ablation figure3 sensitivity tables bench \
        bench-frontend bench-step bench-export export

venv: $(STAMP)

$(STAMP): setup.cfg setup.py
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH (or run: make PYTHON=/path/to/python3.11 ...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,cluster]"  # cluster: Ray, whose test runs a local cluster
	touch $(STAMP)

## test: the README's test command (fast, no network)
test: $(STAMP)
	$(PYTEST) -m "not slow"

## lint: ruff (pyflakes, pycodestyle, import order, bugbear; ruff.toml) on the whole tree
lint: $(STAMP)
	$(VENV)/bin/ruff check .

## test-all: also the slow tests (every real ESC-10 clip, longer training)
test-all: $(STAMP)
	$(PYTEST)

## demo: the whole method on the project's own synthetic data, CPU, a few minutes
demo: $(STAMP)
	$(PY) reproduce/demo.py --data_dir=$(DATA)/synthetic --out_dir=$(OUT)

## data: download and verify ESC-50 and UrbanSound8K into $(DATA)
data: $(STAMP)
	$(PY) data/download.py --dataset all --root $(DATA)

## synthetic: the project's own small data sets (ESC-50 and UrbanSound8K layouts)
synthetic: $(STAMP)
	$(PY) data/synthesize.py --out $(DATA)/synthetic --seed 0

## table1 / table2 / ablation / figure3 / sensitivity: run the missing runs (PROFILE=paper|quick, JOBS=N,
## SEEDS=0,1,2), then write the table
table1 table2 ablation figure3 sensitivity: $(STAMP)
	$(PY) reproduce/run_experiment.py --table=$@ $(RUN_FLAGS)

## preflight: TensorFlow/CUDA/GPUs, weights, data, a few real steps, the tables' hours here (PREFLIGHT_FLAGS=--weights=none offline)
.PHONY: preflight
preflight: $(STAMP)
	$(PY) reproduce/preflight.py --profile=$(PROFILE) --jobs=$(JOBS) --data_root=$(DATA) \
	    $(if $(ESC50_ROOT),--esc50_root=$(ESC50_ROOT)) $(if $(US8K_ROOT),--us8k_root=$(US8K_ROOT)) \
	    $(if $(RUNS_PER_GPU),--runs_per_gpu=$(RUNS_PER_GPU)) $(PREFLIGHT_FLAGS)

## tables: rewrite every table, Figure 3 and REPORT.md from the finished runs
tables: $(STAMP)
	$(PY) reproduce/make_tables.py --results=$(OUT) --profile=$(PROFILE)

## bench: every benchmark, ratios measured side by side in one run
bench: bench-frontend bench-step bench-export

bench-frontend: $(STAMP)
	$(PY) reproduce/bench_frontend.py

## bench-step: train step vs bare backbone (ratio, peak memory), FLOPs per step, projected GPU-hours
bench-step: $(STAMP)
	$(PY) reproduce/bench_step.py $(BENCH_FLAGS)

## bench-export: model sizes and CPU latency of the SavedModel, TFLite float and TFLite quantised
bench-export: $(STAMP)
	$(PY) reproduce/bench_export.py $(BENCH_FLAGS)

## export: a run as a deployable model (make export RUN=results/<exp>/<run-id> EXPORT=exports/<name>)
RUN    ?=
EXPORT ?=
export: $(STAMP)
	$(VENV)/bin/csr-export --run=$(RUN) --out=$(EXPORT) --quantize=dynamic
