"""`ehft train`: a method from the zoo, one or two fairseq-train stages per seed."""

import json

from ..train.recipes import RECIPES
from ..train.stage1 import DEFAULT_MAX_EPOCHS, DEFAULT_PATIENCE
from ..train.sweep import MAX_RUNS
from . import numbers


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="train a method (ft, lp, lp-ft, bitfit, lora, prefix, mixout, "
                   "child-tuning-d, topk-K, spafit-*, strata, ehft-*) for one or more seeds",
        description="Runs the stages of --method with fairseq-train: EH-FT methods train the "
                    "PEFT method and head (stage 1) until its dev metric stops improving, then "
                    "finetune fully from the original checkpoint with stage 1's best head "
                    "(stage 2) for --total-updates/--total-epochs, the budget --method ft gets "
                    "from the same flags. Arguments after '--' go to every fairseq-train call.")
    p.add_argument("--method", required=True, nargs="+",
                   help="one or more methods; with several values here or in --lr-stage1, "
                        "--lr-stage2, --batch-size, every combination is a run (a sweep)")
    p.add_argument("--data", required=True, help="directory written by `ehft prepare`")
    p.add_argument("--checkpoint", required=True, help="pretrained RoBERTa model.pt")
    p.add_argument("--save-dir", required=True,
                   help="runs go to SAVE_DIR/TASK/METHOD/seedK; in a sweep to "
                        "SAVE_DIR/TASK/METHOD/SETTING/seedK, SETTING naming the values of the "
                        "flags given several (e.g. lr2=1e-05_bs=16)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--total-updates", type=int,
                   help="updates of the finetuning: a one-stage method's, a two-stage method's "
                        "stage 2 (both stages together with --stage1-ratio), > 0")
    p.add_argument("--total-epochs", type=float,
                   help="the budget in passes over the training set instead: "
                        "ceil(train examples / batch size) updates a pass, > 0")
    p.add_argument("--recipe", choices=RECIPES,
                   help="published settings for the task: fairseq = fairseq's RoBERTa GLUE "
                        "recipe (lr, batch size, updates, warmup, dropout, max tokens); "
                        "explicit flags override it")
    stage1 = p.add_argument_group(
        "stage 1 of two-stage methods (ehft-*, lp-ft)",
        "By default stage 1 trains until its dev metric has not improved for "
        "--stage1-patience validations (one a pass over the data, none in the warmup), at "
        "most --stage1-max-epochs, and hands over its best head; --total-* is then stage 2's "
        "budget. Give at most one of --stage1-updates, --stage1-epochs (a fixed stage 1, on "
        "top of --total-*) and --stage1-ratio (a share of --total-*, which then covers both "
        "stages: the rule before the default existed); these hand over the last head. One-stage "
        "methods ignore these flags.")
    stage1.add_argument("--stage1-patience", type=int,
                        help="validations without improvement that end stage 1 (default %d)"
                             % DEFAULT_PATIENCE)
    stage1.add_argument("--stage1-max-epochs", type=float,
                        help="the most stage 1 trains, in passes over the training set; its "
                             "learning-rate schedule spans it (default %g, the EH-FT authors' "
                             "longest stage 1)" % DEFAULT_MAX_EPOCHS)
    stage1.add_argument("--stage1-updates", type=int, help="a fixed stage 1 of N updates, >= 1")
    stage1.add_argument("--stage1-epochs", type=float,
                        help="a fixed stage 1 of E passes over the training set, > 0")
    stage1.add_argument("--stage1-ratio", type=float,
                        help="stage 1 takes this share of --total-updates, in (0, 1)")
    stage1.add_argument("--stage1-head", choices=("best", "last"),
                        help="the stage-1 head handed over: its best dev validation's or its "
                             "last (default: best with the default stage 1, else last)")
    p.add_argument("--lr-stage1", type=float, nargs="+",
                   help="override the method table's stage-1 lr (the rate of a "
                        "parameter-efficient stage); several values: a sweep")
    p.add_argument("--lr-stage2", type=float, nargs="+",
                   help="override the full-finetuning lr (default 1e-5, or the recipe's); "
                        "several values: a sweep")
    p.add_argument("--arch", help="roberta_ehft_base or roberta_ehft_large (default: from the "
                                  "checkpoint)")
    p.add_argument("--head-type", choices=("ehft", "fairseq"), default="ehft")
    p.add_argument("--batch-size", type=int, nargs="+",
                   help="sentences per batch (default 32); several values: a sweep")
    p.add_argument("--yes", action="store_true",
                   help="run a sweep of more than %d runs" % MAX_RUNS)
    p.add_argument("--warmup-ratio", type=float,
                   help="warmup share of each stage, linear decay after it (default 0.1)")
    track = p.add_argument_group(
        "tracking", "Each stage of each run logs on its own, named TASK/METHOD[/SETTING]/seedK/"
        "STAGE; stage 2's steps continue stage 1's. The same fairseq flags after '--' are "
        "treated alike.")
    track.add_argument("--tensorboard", metavar="DIR",
                       help="TensorBoard event files under DIR/TASK/METHOD/.../STAGE")
    track.add_argument("--wandb-project", metavar="P",
                       help="a W&B run per stage in project P, grouped by the save "
                            "directory's name (WANDB_RUN_GROUP wins; WANDB_MODE=offline "
                            "works)")
    p.add_argument("--log-drift", action="store_true",
                   help="log every stage's distance from the pretrained backbone at every update "
                        "(‖θ − θ₀‖, for `ehft analyze`'s parameter-drift figure)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--quiet", dest="display", action="store_const", const="quiet",
                       help="print nothing but warnings and errors (fairseq-train's output "
                            "goes to each stage's fairseq.out, its log to train.log)")
    shown.add_argument("--fairseq-output", dest="display", action="store_const",
                       const="fairseq", help="show fairseq-train's own output instead of the "
                                             "progress lines")
    p.add_argument("--progress-every", type=int, metavar="N",
                   help="off a terminal, a progress line every N updates besides one at each "
                        "validation (default: a tenth of the stage; fairseq logs training "
                        "every --log-interval updates, 100 unless given after '--')")
    p.add_argument("--dry-run", action="store_true",
                   help="print every stage's exact fairseq-train command (and the hand-over "
                        "between stages) without running or writing anything")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run directory that holds other files or settings")
    p.add_argument("fairseq_args", nargs="*", help="after '--': extra fairseq-train arguments")
    return p


RANGES = {"seeds": numbers.SEED, "total_updates": numbers.POSITIVE_INT,
          "total_epochs": numbers.POSITIVE, "stage1_ratio": numbers.SHARE,
          "stage1_updates": numbers.POSITIVE_INT, "stage1_epochs": numbers.POSITIVE,
          "stage1_patience": numbers.POSITIVE_INT, "stage1_max_epochs": numbers.POSITIVE,
          "lr_stage1": numbers.POSITIVE, "lr_stage2": numbers.POSITIVE,
          "batch_size": numbers.POSITIVE_INT, "warmup_ratio": numbers.WARMUP_SHARE,
          "progress_every": numbers.POSITIVE_INT}


def run(args):
    from ..train.launcher import train

    numbers.check(args, RANGES)
    for run_dir in train(args):
        if not args.dry_run:
            print(json.dumps({"run": run_dir}))
