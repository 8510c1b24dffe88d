#!/usr/bin/env bash
# Finetune a pretrained RoBERTa on RTE with fairseq's published RoBERTa GLUE settings.
# usage: examples/finetune_rte.sh DATA_BIN ROBERTA_MODEL_PT ARCH SAVE_DIR [fairseq flags...]
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 DATA_BIN ROBERTA_MODEL_PT ARCH(roberta_base|roberta_large) SAVE_DIR [fairseq flags...]" >&2
    exit 2
fi
data=$1 checkpoint=$2 arch=$3 save_dir=$4
shift 4
[ -f "$data/ehft_task.json" ] || { echo "$data: not written by ehft prepare" >&2; exit 2; }
[ -f "$checkpoint" ] || { echo "$checkpoint: checkpoint not found" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)

exec fairseq-train "$data" --user-dir "$here/ehft_plugin" \
    --task glue_ehft --criterion sentence_prediction_ehft --arch "$arch" \
    --restore-file "$checkpoint" --reset-optimizer --reset-dataloader --reset-meters \
    --dropout 0.1 --attention-dropout 0.1 --max-positions 512 \
    --optimizer adam --adam-betas '(0.9,0.98)' --adam-eps 1e-6 --weight-decay 0.1 --clip-norm 0.0 \
    --lr 2e-5 --lr-scheduler polynomial_decay --warmup-updates 122 --total-num-update 2036 \
    --max-update 2036 --max-epoch 10 --batch-size 16 --max-tokens 4400 \
    --best-checkpoint-metric accuracy --maximize-best-checkpoint-metric --no-epoch-checkpoints \
    --find-unused-parameters --log-format json --save-dir "$save_dir" "$@"
