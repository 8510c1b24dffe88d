# `make demo` and `make test` set everything up first (idempotent), then run.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=10 tests

clean:
	rm -rf demo-output .pytest_cache
