# Two commands for a fresh machine (only Python 3.10+ and the package registry):
#   make demo   runs the course pipeline on the embedded digits data -> runs/, report/
#   make test   runs the whole test suite
# Each creates .venv on first use and reuses it afterwards.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo quick test bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python scripts/course.py --out runs --report report

quick: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python scripts/course.py --quick --out runs-quick --report report-quick

test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest

bench: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python scripts/bench.py --out BENCHMARKS.md

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy attacks models

clean:
	rm -rf $(VENV) runs runs-quick report report-quick
