#!/usr/bin/env bash
# The main job (run by `make demo`): plain finetuning vs LP-FT vs EH-FT(BitFit) vs
# EH-FT(LoRA) on SuperGLUE CB (embedded in examples/data/CB), with the real pretrained
# all-MiniLM-L6-v2 converted to fairseq by setup; the same finetuning updates for every
# method, the two-stage methods' stage 1 until its dev accuracy stops improving (capped at
# $STAGE1_EPOCHS passes here to keep the demo short); stage 1's best dev accuracy printed
# next to the linear probe's (LP-FT's stage 1) and the level of always predicting one class;
# a side-by-side dev table and plots written by `ehft report`. Every number printed is
# measured by this run.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
BACKBONE=${EHFT_BACKBONE:-.cache/backbones/all-MiniLM-L6-v2}
DATA=${EHFT_DEMO_DATA:-examples/data/CB}
OUT=${EHFT_DEMO_OUT:-demo-output}
UPDATES=${EHFT_DEMO_UPDATES:-180}
BATCH=${EHFT_DEMO_BATCH:-8}
LR=${EHFT_DEMO_LR:-5e-5}          # full finetuning (FT, and EH-FT stage 2)
SEEDS=${EHFT_DEMO_SEEDS:-1}
METHODS=${EHFT_DEMO_METHODS:-ft lp-ft ehft-bitfit ehft-lora}
STAGE1_EPOCHS=${EHFT_DEMO_STAGE1_EPOCHS:-10}  # the most stage 1 trains (default: 40 passes)
STAGE1_PATIENCE=${EHFT_DEMO_STAGE1_PATIENCE:-3}  # validations without a gain that end it

if [ ! -f "$BACKBONE/ehft_backbone.json" ]; then
    echo "demo: no converted backbone at $BACKBONE; run 'make setup' (it converts all-MiniLM-L6-v2)" >&2
    exit 2
fi
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start ))s"; }
# one directory per setting, so that a second run with the same settings reuses finished runs
RUNS="$OUT/runs-u$UPDATES-b$BATCH-lr$LR-s$STAGE1_EPOCHS-p$STAGE1_PATIENCE"
mkdir -p "$OUT/logs"

echo "demo 1/3: ehft prepare cb --backbone $BACKBONE  ($DATA -> $OUT/data-bin/cb)"
"$BIN/ehft" prepare cb --raw-dir "$DATA" --out-dir "$OUT/data-bin/cb" --force \
    --backbone "$BACKBONE" 2> "$OUT/logs/prepare.log" >/dev/null

echo "demo 2/3: ehft train, $UPDATES finetuning updates for each method (batch $BATCH, lr $LR, seeds: $SEEDS); stage 1 until dev accuracy stops improving for $STAGE1_PATIENCE validations, at most $STAGE1_EPOCHS passes"
# ehft train prints a progress line per validation (and every --progress-every updates) and
# one line per finished run; fairseq-train's own output stays in the run's stage directories
for method in $METHODS; do
    for seed in $SEEDS; do
        log="$OUT/logs/$method-seed$seed.log"
        echo "  $method (seed $seed)  [$(elapsed)]"
        set +e
        "$BIN/ehft" train --method "$method" --data "$OUT/data-bin/cb" \
            --checkpoint "$BACKBONE/model.pt" --save-dir "$RUNS" --seeds "$seed" \
            --total-updates "$UPDATES" --batch-size "$BATCH" --lr-stage2 "$LR" \
            --stage1-max-epochs "$STAGE1_EPOCHS" --stage1-patience "$STAGE1_PATIENCE" \
            --progress-every 10 \
            -- --cpu --num-workers 0 --log-interval 10 --save-interval 1000 2> "$log" \
            | grep --line-buffered -v '^{"run"' | sed -u "s|^$RUNS/||; s|^|      |"
        status=${PIPESTATUS[0]}
        set -e
        [ "$status" -eq 0 ] || { echo "demo: $method failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
        grep -q "already done, skipped" "$log" && echo "      (finished before: reused)"
    done
done

echo "stage 1: the head each two-stage run handed over"
"$BIN/python" - "$RUNS/cb" $SEEDS <<'PY'
import json, os, sys
root, seeds = sys.argv[1], sys.argv[2:]
heads = {}
for method in sorted(os.listdir(root)):
    for seed in seeds:
        path = os.path.join(root, method, "seed" + seed, "stage1", "done.json")
        if os.path.isfile(path):
            done = json.load(open(path))
            if done.get("head"):
                heads[method, seed] = (done["head"], done.get("trained_updates"))
for (method, seed), (head, updates) in sorted(heads.items()):
    probe = heads.get(("lp-ft", seed))
    print("    %-12s seed %s: best dev %s %.2f after %s updates (linear probe: %s; always one "
          "class: %.2f)%s" % (method, seed, head["metric"], head["best_dev"], updates,
                              "%.2f" % probe[0]["best_dev"] if probe else "not run",
                              head["constant_level"],
                              "  <- made no head" if head["at_chance"] else ""))
PY

echo "demo 3/3: ehft report  [$(elapsed)]"
"$BIN/ehft" report "$RUNS" --out "$OUT/results.md" > /dev/null
# the measured table only; results.md continues with the published tables, marked as such
sed -n '/^| method/,/^$/p' "$OUT/results.md" | sed 's/^/    /'

cat <<MSG
demo: done in $(elapsed). Written: $OUT/results.md (with published reference tables below the
measured one), $OUT/results.csv, $OUT/results.json, $OUT/results-curves-cb.png, $OUT/results-bars.png.
This is one short run per method on a 22M-parameter sentence-embedding model and CB's 56 dev
examples: differences of a few points are within seed noise. The full experiment, as the
EH-FT paper runs it (RoBERTa-large, several seeds, every task):
    ehft prepare cb --raw-dir CB --out-dir data-bin/cb --bpe gpt2 ... (RoBERTa's BPE files)
    ehft train --method ft          --data data-bin/cb --checkpoint roberta.large/model.pt \\
               --save-dir runs --seeds 1 2 3 4 --recipe ehft-paper
    ehft train --method ehft-bitfit --data data-bin/cb --checkpoint roberta.large/model.pt \\
               --save-dir runs --seeds 1 2 3 4 --recipe ehft-paper
    ehft report runs --out results.md
Or more of this demo (each run's time is in its done.json; ehft report lists them):
    EHFT_DEMO_SEEDS="1 2 3 4" EHFT_DEMO_UPDATES=400 make demo
MSG
