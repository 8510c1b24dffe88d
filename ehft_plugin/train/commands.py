"""The fairseq-train command of a planned stage, the checkpoint it starts from, and
`ehft train --dry-run`, which prints every stage's command as a run would launch it."""

import os
import shlex
import sys

from . import stage1 as stage1_rules
from . import tracking
from .handover import write_stage_start
from .pretrained import CARRIED, DIMS
from .provenance import PLUGIN_DIR
from .rundir import (BEST_CHECKPOINT, CHILD_MASK_FILE, HEAD_FILE, LAST_CHECKPOINT, LOG, PEFT_FILE,
                     START_FILE, run_directory)


def warmup_updates(config, updates):
    return int(round(config.warmup_ratio * updates))


def stage_command(config, stage, seed, start, save_dir):
    """fairseq-train's arguments for a planned stage of `config` (a planned RunConfig)."""
    warmup = warmup_updates(config, stage.updates)
    peft = stage.stage
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "fairseq-train"), config.data,
        "--user-dir", PLUGIN_DIR,
        "--task", "glue_ehft", "--criterion", "sentence_prediction_ehft",
        "--arch", config.arch, "--peft", peft.peft, "--head-type", config.head_type,
        "--finetune-from-model", start, "--save-dir", save_dir,
        "--optimizer", "ehft_adamw", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-06",
        "--weight-decay", "0.1", "--lr", repr(peft.lr), "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", str(warmup), "--total-num-update", str(stage.updates),
        "--max-update", str(stage.updates), "--max-epoch", "0",
        "--batch-size", str(config.batch_size),
        "--seed", str(seed), "--best-checkpoint-metric", config.metric,
        "--maximize-best-checkpoint-metric", "--no-epoch-checkpoints",
        "--log-format", "json", "--log-file", os.path.join(save_dir, LOG),
    ]
    for name in DIMS + CARRIED:
        if name in config.dims:
            cmd += ["--" + name.replace("_", "-"), str(config.dims[name])]
    if config.log_drift:
        cmd += ["--log-drift-from", os.path.abspath(config.checkpoint)]
    if peft.child_share:  # written before the stage starts (_child_mask)
        cmd += ["--child-tuning-mask", os.path.join(save_dir, CHILD_MASK_FILE)]
    if stage.budget is not None:
        cmd += stage1_rules.fairseq_flags(stage.budget, warmup)
    return cmd + tracking.fairseq_flags(config, save_dir) + list(config.fairseq_args)


def stage_start(config, run_dir, stage, original, write=True):
    """The checkpoint the stage starts from: the original (without its heads), or with the
    head (and PEFT parameters) a stage before it hands over; written by the leader; a
    dry run only names it. rank 0 writes it; another rank's fairseq-train reads it only once
    rank 0's has joined the process group, that is, after it was written."""
    peft = stage.stage
    head = peft.head_from and os.path.join(run_dir, peft.head_from, HEAD_FILE)
    reserved = peft.reserve and os.path.join(run_dir, peft.head_from, PEFT_FILE)
    return write_stage_start(original, config.checkpoint, head,
                             os.path.join(run_dir, stage.name, START_FILE), reserved,
                             write=write)


def dry_run(config, original):
    """Every seed's and stage's exact fairseq-train command, printed, nothing run or written:
    the planned stages a run walks. A stage that starts from stage 1's head starts from
    START, which `ehft handover` writes (as `ehft train` does) once stage 1 has finished; a
    Child-Tuning stage reads the mask `ehft child-mask` writes (as `ehft train` does) before
    it starts."""
    method, budget = config.resolved, config.budget
    run_dirs = []
    for seed in config.seeds:
        run_dir = run_directory(config.save_dir, config.task, method.name, seed, config.setting)
        run_dirs.append(run_dir)
        print("# run %s: %s%s, seed %d" % (run_dir, method.name, " (%s)" % config.setting
                                           if config.setting else "", seed))
        for stage in config.stages:
            peft = stage.stage
            stage_dir = os.path.join(run_dir, stage.name)
            start = stage_start(config, run_dir, stage, original, write=False)
            print("# seed %d, %s: --peft %s, lr %g, %s" % (
                seed, stage.name, peft.peft, peft.lr, stage.budget.describe(config.metric)
                if stage.budget is not None else "%d updates" % stage.updates))
            if start != os.path.abspath(config.checkpoint) and not peft.head_from:
                print("# %s: %s without its classification heads (ehft train writes it)"
                      % (start, config.checkpoint))
            if peft.head_from:
                print("ehft handover --stage1 %s --checkpoint %s --out %s%s" % (
                    shlex.quote(os.path.join(run_dir, peft.head_from, LAST_CHECKPOINT
                                             if budget.head == stage1_rules.LAST
                                             else BEST_CHECKPOINT)),
                    shlex.quote(os.path.abspath(config.checkpoint)), shlex.quote(start),
                    " --reserve '%s'" % config.stages[0].stage.peft if peft.reserve else ""))
            cmd = [str(part) for part in stage_command(config, stage, seed, start, stage_dir)]
            if peft.child_share:
                at = cmd.index("--child-tuning-mask")
                print("ehft child-mask --share %g%s --out %s -- %s" % (
                    peft.child_share, " --fisher-clip %g" % peft.fisher_clip
                    if peft.fisher_clip else "", shlex.quote(cmd[at + 1]),
                    " ".join(shlex.quote(part) for part in cmd[1:at] + cmd[at + 2:])))
            print(" ".join(shlex.quote(part) for part in cmd))
    return run_dirs
