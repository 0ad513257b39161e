# Each target creates .venv on first use and installs the package with its test extras.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench notebooks clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench,plots]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxlmm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_whiten.py
	$(BIN)/python benchmarks/bench_lasso_path.py
	$(BIN)/python benchmarks/bench_best_subset.py
	$(BIN)/python benchmarks/bench_debias.py
	cd benchmarks && ../$(BIN)/python bench_lmmlasso.py

# Studies reproducing the seeds' tables (minutes each; not part of `make bench`):
#   benchmarks/sim_lmmlasso_table2.py, benchmarks/study_eb_ridge.py, benchmarks/study_shel.py

notebooks: $(STAMP)
	$(BIN)/pip install --quiet -e ".[notebooks]"
	$(BIN)/python notebooks/run.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) build dist *.egg-info
