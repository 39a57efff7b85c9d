# csr: every target bootstraps .venv on first use, so on a fresh machine `make test` alone installs and tests.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data/datasets
OUT    ?= results
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: venv test test-all demo data synthetic

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

## test-all: also the slow tests (every real ESC-10 clip, longer training)
test-all: $(STAMP)
	$(PY) -m pytest -q

## data: download and verify ESC-50 and UrbanSound8K into $(DATA)
data: $(STAMP)
	$(PY) data/download.py --dataset esc50 --root $(DATA)
	$(PY) data/download.py --dataset us8k --root $(DATA)

## synthetic: the project's own small data sets (ESC-50 and UrbanSound8K layouts)
synthetic: $(STAMP)
	$(PY) data/synthesize.py --out $(DATA)/synthetic --seed 0
