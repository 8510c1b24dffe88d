# `make demo` and `make test` set everything up first (idempotent), then run.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	@bash scripts/demo.sh

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=10 tests

# in-process tests only (no fairseq-train, ehft or benchmark processes): a few minutes
test-fast: setup
	EHFT_FAST_LANE=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m "not slow" --durations=10 tests

clean:
	rm -rf demo-output .pytest_cache
