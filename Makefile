# Two commands work on a fresh machine: `make demo` and `make test`.
# Each installs what it needs itself: the virtualenv, the Python packages and
# the Debian packages the sandbox runs (openssh-server, prometheus, alertmanager).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-12)

.PHONY: demo test unit integration lint bench deps system-deps clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

deps: $(STAMP) system-deps

system-deps:
	@bash sandbox/install-system-deps

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: deps lint
	$(VENV)/bin/runbook validate runbooks/
	$(VENV)/bin/runbook lint --strict runbooks/
	$(VENV)/bin/runbook test runbooks/ --min-coverage 100
	$(VENV)/bin/pytest -q

unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

demo: deps
	@bash sandbox/demo

bench: deps
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
