# Two sacred commands: `make demo` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: demo test bench lint typecheck clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# constraints.txt: the exact versions the golden outputs were made with (pyproject.toml has ranges)
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e .
	touch $@

$(DEV_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@ $(STAMP)

# DEMO_ARGS: other flashcast demo options, e.g. make demo DEMO_ARGS="--seed 3 --days 200"
demo: $(STAMP)
	$(BIN)/flashcast demo --out out $(DEMO_ARGS)

test: $(DEV_STAMP)
	scripts/test-services
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(DEV_STAMP)
	$(BIN)/python -m benchmarks

# What `make test` checks before the tests (the code is wrapped by hand at 120 columns, not by ruff format)
lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) out .flashcast
