# Shorthands for tasks.py, which needs nothing but Python 3.10+ (see README).
PYTHON ?= python3

.PHONY: demo quick test bench lint clean

demo:
	$(PYTHON) tasks.py demo

quick:
	$(PYTHON) tasks.py demo --quick --out runs-quick --report report-quick

test:
	$(PYTHON) tasks.py test

bench:
	$(PYTHON) tasks.py bench

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy attacks models

clean:
	rm -rf .venv runs runs-quick report report-quick
