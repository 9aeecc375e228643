# Two commands on a fresh machine: `make demo` and `make test`.
# Everything else (the virtual environment, the embedded PostgreSQL) is made here.

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo demo-once test test-fast test-scenarios test-acceptance lint format bench clean docs docs-serve reference

$(STAMP): pyproject.toml syncd/engine/rowdiff/rowdiff.c
	@test -n "$(PYTHON)" || { echo "syncd needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,docs]'
	@# the row differ's accelerator: the system's C compiler, else Zig's from PyPI; without
	@# either the pure-Python differ runs (same results, slower)
	$(BIN)/python -m syncd.engine.rowdiff.build build --fetch-compiler || true
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
	$(BIN)/ruff check syncd tests bench tools deploy/airflow deploy/sources
	$(BIN)/ruff format --check syncd tests bench tools deploy/airflow deploy/sources
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix syncd tests bench tools deploy/airflow deploy/sources
	$(BIN)/ruff format syncd tests bench tools deploy/airflow deploy/sources

bench: $(STAMP)
	$(BIN)/python -m bench

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
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache site
