# Two set-up commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= auto

.PHONY: demo test lint lint-imports format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mlops demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory lint-imports

# import-linter reads packages from one directory tree, so the fixed folders are copied into the
# shape they install as (mlops_pipeline/...) and checked there against pyproject's contracts.
LAYERS := build/layers
lint-imports: $(STAMP)
	rm -rf $(LAYERS) && mkdir -p $(LAYERS)
	cp -r mlops $(LAYERS)/mlops_pipeline
	for p in flows tasks targets serving; do cp -r $$p $(LAYERS)/mlops_pipeline/$$p; done
	cd $(LAYERS) && PYTHONPATH=. $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

test: lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist load --durations=25

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .mlops .pytest_cache .ruff_cache build
