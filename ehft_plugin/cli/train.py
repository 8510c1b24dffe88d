"""`ehft train`: a method from the zoo, one or two fairseq-train stages per seed."""

import json

from ..methods import STAGE1_SHARE
from . import numbers
from ..recipes import RECIPES


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="train a method (ft, lp, lp-ft, bitfit, lora, prefix, mixout, "
                   "child-tuning-d, topk-K, spafit-*, strata, ehft-*) for one or more seeds",
        description="Runs the stages of --method with fairseq-train: EH-FT methods train the "
                    "PEFT method and head for --stage1-ratio of --total-updates, then finetune "
                    "fully from the original checkpoint with stage 1's head. Arguments after "
                    "'--' go to every fairseq-train call.")
    p.add_argument("--method", required=True)
    p.add_argument("--data", required=True, help="directory written by `ehft prepare`")
    p.add_argument("--checkpoint", required=True, help="pretrained RoBERTa model.pt")
    p.add_argument("--save-dir", required=True, help="runs go to SAVE_DIR/TASK/METHOD/seedK")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--total-updates", type=int,
                   help="updates of the whole method (both stages together), > 0")
    p.add_argument("--total-epochs", type=float,
                   help="the budget in passes over the training set instead: "
                        "ceil(train examples / batch size) updates a pass, > 0")
    p.add_argument("--recipe", choices=RECIPES,
                   help="published settings for the task: fairseq = fairseq's RoBERTa GLUE "
                        "recipe (lr, batch size, updates, warmup, dropout, max tokens); "
                        "explicit flags override it")
    p.add_argument("--stage1-ratio", type=float, default=STAGE1_SHARE,
                   help="share of the updates for stage 1, in (0, 1) (default %g)" % STAGE1_SHARE)
    p.add_argument("--lr-stage1", type=float, help="override the method table's stage-1 lr")
    p.add_argument("--lr-stage2", type=float, help="override the full-finetuning lr (default "
                                                   "1e-5, or the recipe's)")
    p.add_argument("--arch", help="roberta_ehft_base or roberta_ehft_large (default: from the "
                                  "checkpoint)")
    p.add_argument("--head-type", choices=("ehft", "fairseq"), default="ehft")
    p.add_argument("--batch-size", type=int, help="sentences per batch (default 32)")
    p.add_argument("--warmup-ratio", type=float,
                   help="warmup share of each stage, linear decay after it (default 0.1)")
    p.add_argument("--log-drift", action="store_true",
                   help="log every stage's distance from the pretrained backbone at every update "
                        "(‖θ − θ₀‖, for `ehft analyze`'s parameter-drift figure)")
    p.add_argument("--dry-run", action="store_true",
                   help="print every stage's exact fairseq-train command (and the hand-over "
                        "between stages) without running or writing anything")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run directory that holds other files or settings")
    p.add_argument("fairseq_args", nargs="*", help="after '--': extra fairseq-train arguments")
    return p


RANGES = {"seeds": numbers.SEED, "total_updates": numbers.POSITIVE_INT,
          "total_epochs": numbers.POSITIVE, "stage1_ratio": numbers.SHARE,
          "lr_stage1": numbers.POSITIVE, "lr_stage2": numbers.POSITIVE,
          "batch_size": numbers.POSITIVE_INT, "warmup_ratio": numbers.WARMUP_SHARE}


def run(args):
    from ..launcher import train

    numbers.check(args, RANGES)
    for run_dir in train(args):
        if not args.dry_run:
            print(json.dumps({"run": run_dir}))
