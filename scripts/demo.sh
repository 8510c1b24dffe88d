#!/usr/bin/env bash
# The main job (run by `make demo`): real RTE data -> ehft prepare -> fairseq-train with
# --task glue_ehft -> dev metrics from fairseq's log and from `ehft predict` -> a test-set
# submission file.
#
# Until a pretrained backbone is bundled, the model is a small randomly initialised
# RoBERTa, so its dev accuracy is near chance: this shows the pipeline, not EH-FT's gain.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${EHFT_DATA:-../shared/data}
OUT=${EHFT_DEMO_OUT:-demo-output}
UPDATES=${EHFT_DEMO_UPDATES:-150}
BIN=.venv/bin

for f in glue/RTE/train.tsv glue/RTE/dev.tsv glue/RTE/test.tsv bpe/encoder.json bpe/vocab.bpe bpe/dict.txt; do
    if [ ! -f "$DATA/$f" ]; then
        echo "demo: $DATA/$f not found. Point EHFT_DATA at a folder holding glue/RTE/{train,dev,test}.tsv" >&2
        echo "      and bpe/{encoder.json,vocab.bpe,dict.txt} (GPT-2 BPE and the RoBERTa dictionary)." >&2
        exit 2
    fi
done
mkdir -p "$OUT"
log="$OUT/train.log"

echo "demo 1/4: ehft prepare rte  ($DATA/glue/RTE -> $OUT/data-bin/rte)"
"$BIN/ehft" prepare rte --raw-dir "$DATA/glue/RTE" --out-dir "$OUT/data-bin/rte" --force \
    --bpe gpt2 --gpt2-encoder-json "$DATA/bpe/encoder.json" --gpt2-vocab-bpe "$DATA/bpe/vocab.bpe" \
    --srcdict "$DATA/bpe/dict.txt" 2> "$OUT/prepare.log" >/dev/null

echo "demo 2/4: fairseq-train --task glue_ehft, tiny random RoBERTa (4 layers, 64 dims), $UPDATES updates  (log: $log)"
rm -rf "$OUT/checkpoints"
"$BIN/fairseq-train" "$OUT/data-bin/rte" --user-dir ehft_plugin \
    --task glue_ehft --criterion sentence_prediction_ehft \
    --arch roberta_base --encoder-layers 4 --encoder-embed-dim 64 --encoder-ffn-embed-dim 256 \
    --encoder-attention-heads 4 --max-positions 256 \
    --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-6 --weight-decay 0.1 \
    --lr 5e-4 --lr-scheduler polynomial_decay --warmup-updates $((UPDATES / 10)) \
    --total-num-update "$UPDATES" --max-update "$UPDATES" --batch-size 32 \
    --validate-interval-updates 50 --save-interval-updates 50 --no-epoch-checkpoints \
    --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric \
    --cpu --num-workers 0 --seed 1 --log-format simple --log-interval 25 \
    --save-dir "$OUT/checkpoints" > "$log" 2>&1 &
train=$!
trap 'kill $train 2>/dev/null' EXIT
progress() {  # the latest logged update or validation, as one short line
    grep -E "train_inner|valid on 'valid' subset" "$log" | tail -n 1 | sed -nE \
        -e "s/.*valid on 'valid' subset .*\| accuracy ([0-9.]+) .*\| num_updates ([0-9]+).*/validation after update \2: dev accuracy \1/p" \
        -e "s/.*train_inner .*num_updates=([0-9]+),.*/update \1 of $UPDATES/p"
}
shown=""
while kill -0 "$train" 2>/dev/null; do
    now=$(progress || true)
    if [ -n "$now" ] && [ "$now" != "$shown" ]; then echo "    $now"; shown=$now; fi
    sleep 1
done
wait "$train" || { echo "demo: training failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
trap - EXIT
now=$(progress || true)
[ "$now" != "$shown" ] && echo "    $now"
best=$(grep -Eo "best_accuracy [0-9.]+" "$log" | tail -n 1 | cut -d' ' -f2 || true)
echo "    best dev accuracy: ${best:-see $log} (fairseq's validation over the whole dev set)"

echo "demo 3/4: ehft predict on the dev file (labels known: scores recomputed from predictions)"
"$BIN/ehft" predict --checkpoint "$OUT/checkpoints/checkpoint_best.pt" \
    --input "$DATA/glue/RTE/dev.tsv" --labeled --out "$OUT/RTE.dev.tsv" 2> "$OUT/predict.log" \
    | sed 's/^/    /'

echo "demo 4/4: ehft predict on the test file -> GLUE submission $OUT/RTE.tsv"
"$BIN/ehft" predict --checkpoint "$OUT/checkpoints/checkpoint_best.pt" \
    --input "$DATA/glue/RTE/test.tsv" --out "$OUT/RTE.tsv" 2>> "$OUT/predict.log" >/dev/null
head -n 3 "$OUT/RTE.tsv" | sed 's/^/    /'

cat <<MSG

demo: done. The model was a small randomly initialised RoBERTa, so near-chance dev accuracy is
expected. For real numbers, finetune a pretrained RoBERTa checkpoint the same way:
    fairseq-train $OUT/data-bin/rte --user-dir ehft_plugin --task glue_ehft \\
        --criterion sentence_prediction_ehft --arch roberta_large \\
        --restore-file roberta.large/model.pt --reset-optimizer --reset-dataloader --reset-meters ...
(the full recipe is in examples/README.md).
MSG
