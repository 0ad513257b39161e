# Each target creates its virtual environment on first use. `demo`, `test`, `bench`,
# `notebooks` and `docs` install the exact versions of requirements*.lock (a new release cannot change a
# result); `test-latest` installs the newest releases pyproject.toml allows; `lock` refreshes
# the lock files to those newest releases (run it, then `make test`, then commit the locks).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
NOTEBOOK_LOCK := requirements-notebooks.lock
DOCS_LOCK := requirements-docs.lock
# --max-worker-restart=0: a worker that dies (pytest-timeout kills a hung one) fails the run at once,
# naming its test, instead of leaving the xdist controller waiting for it.
PYTEST := python -m pytest -q -n 2 --dist worksteal --max-worker-restart=0 -p no:cacheprovider --durations=15
# `make test` leaves out the tests marked slow (simulation-scale behaviour checks over many
# replicates, notebook execution); every reference check is in it. `make test-slow` runs the rest.
TEST := $(PYTEST) -m "not slow"

.PHONY: demo test test-slow test-latest bench notebooks docs lock clean

$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/jaxlmm demo

test: $(STAMP)
	$(BIN)/$(TEST)

test-slow: $(STAMP)
	$(BIN)/$(PYTEST) -m slow

# The suite against the newest releases of every dependency, in its own environment.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet --upgrade -e ".[test,bench,plots]"
	.venv-latest/bin/pip list --format=freeze | grep -iE '^(jax|jaxlib|numpy|scipy|equinox|optax|skscope|scikit-learn|statsmodels)=='
	.venv-latest/bin/$(TEST)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_whiten.py
	$(BIN)/python benchmarks/bench_lasso_path.py
	$(BIN)/python benchmarks/bench_best_subset.py
	$(BIN)/python benchmarks/bench_debias.py
	$(BIN)/python benchmarks/first_call.py
	$(BIN)/python benchmarks/float32.py
	cd benchmarks && ../$(BIN)/python bench_lmmlasso.py
	cd benchmarks && ../$(BIN)/python bench_sweep.py
	cd benchmarks && ../$(BIN)/python bench_replicates.py
	cd benchmarks && ../$(BIN)/python bench_lmm.py --ml
	cd benchmarks && ../$(BIN)/python bench_scaling.py

# On a GPU: bash benchmarks/gpu.sh (the suite and the device benchmarks, under 8 minutes).
# Studies reproducing the seeds' tables (minutes each; not part of `make bench`):
#   benchmarks/sim_lmmlasso_table2.py, benchmarks/study_eb_ridge.py, benchmarks/study_shel.py

notebooks: $(STAMP)
	$(BIN)/pip install --quiet --no-deps -r $(NOTEBOOK_LOCK)
	$(BIN)/python notebooks/run.py notebooks/*.ipynb

# The documentation site (mkdocs-material + mkdocstrings) into site/; --strict fails on any
# warning: a broken link, a missing page, an API name that no longer exists.
# MathJax (Debian's libjs-mathjax: TeX input, SVG output, TeX fonts) is copied into the site so
# that its mathematics renders offline.
MATHJAX := /usr/share/javascript/mathjax
docs: $(STAMP)
	$(BIN)/pip install --quiet --no-deps -r $(DOCS_LOCK)
	test -f $(MATHJAX)/MathJax.js || apt-get install -y --no-install-recommends libjs-mathjax
	rm -rf docs/javascripts/mathjax && mkdir -p docs/javascripts/mathjax/jax/output/SVG/fonts
	cp -rL $(MATHJAX)/MathJax.js $(MATHJAX)/extensions docs/javascripts/mathjax/
	cp -rL $(MATHJAX)/jax/input $(MATHJAX)/jax/element docs/javascripts/mathjax/jax/
	cd $(MATHJAX)/jax/output/SVG && cp -rL *.js autoload fonts/TeX $(CURDIR)/docs/javascripts/mathjax/jax/output/SVG/ 2>/dev/null; true
	mv docs/javascripts/mathjax/jax/output/SVG/TeX docs/javascripts/mathjax/jax/output/SVG/fonts/TeX
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Re-resolve the lock files to the newest releases that pyproject.toml allows (uv, in a
# throwaway environment), for Python 3.11 as CI runs it.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet uv
	.venv-lock/bin/uv pip compile pyproject.toml --upgrade --python-version 3.11 --custom-compile-command "make lock" \
		--extra test --extra bench --extra plots -o $(LOCK)
	.venv-lock/bin/uv pip compile pyproject.toml --upgrade --python-version 3.11 --custom-compile-command "make lock" \
		--extra test --extra bench --extra plots --extra notebooks -o $(NOTEBOOK_LOCK)
	.venv-lock/bin/uv pip compile pyproject.toml --upgrade --python-version 3.11 --custom-compile-command "make lock" \
		--extra test --extra bench --extra plots --extra docs -o $(DOCS_LOCK)
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .venv-latest .venv-lock build dist site *.egg-info
