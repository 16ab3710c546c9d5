# Two entry points, as README.md gives them: `make run` and `make check`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run check lint test test-fast bench system clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.check-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,pcsc]'
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/edge-gateway run

system:
	bash scripts/system-deps.sh

lint: $(VENV)/.check-installed
	$(BIN)/ruff check gateway drivers tests bench
	$(BIN)/ruff format --check gateway drivers tests bench
	$(BIN)/mypy --strict gateway drivers tests

# The whole suite, the `slow` tests included (tests/systemd/test_nspawn.py boots a container).
test: $(VENV)/.check-installed
	$(BIN)/pytest -q

test-fast: $(VENV)/.check-installed
	$(BIN)/pytest -q -m "not slow"

check: system
	$(MAKE) lint test

bench: $(VENV)/.check-installed
	for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
