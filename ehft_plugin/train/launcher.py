"""`ehft train`: run a method's stages with fairseq-train, one run directory per seed
(its layout: `rundir`).

A stage with done.json is not run again; an unfinished stage resumes from its own
checkpoint_last.pt (fairseq's --finetune-from-model only applies to a first launch). The
launcher builds argument lists and runs the seed and stage loop; the hand-over is
`handover`'s, and fairseq does the training.
"""

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ..data.binarize import load_metadata
from ..errors import EhftError
from ..fairseq_compat.distributed import adopt_slurm_step, torchrun_settings
from ..peft.plan import parse_plan
from . import progress, sweep, tracking
from . import stage1 as stage1_rules
from .handover import HEAD_NAME, write_handover, write_stage_start
from .locks import exclusive
from .methods import rate_flags, resolve_method, with_learning_rates
from .pretrained import CARRIED, DIMS, check_fits_data, model_args, read_original
from .provenance import PLUGIN_DIR, software
from .recipes import apply_recipe, recipe_method
from .rundir import (BEST_CHECKPOINT, CHILD_MASK_FILE, DONE_RECORD, HEAD_FILE, LAST_CHECKPOINT,
                     LOG, PEFT_FILE, START_FILE, last_update, read_json, recorded_commands,
                     run_directory, trained_updates, training_seconds, valid_records,
                     validated_at_the_end, write_done, write_run_record)

logger = logging.getLogger(__name__)

_ARCH = {"roberta_base": "roberta_ehft_base", "roberta_large": "roberta_ehft_large",
         "roberta": "roberta_ehft_base"}


def warmup_updates(opts, updates):
    return int(round(opts.warmup_ratio * updates))


def stage_command(opts, stage, updates, start, save_dir, seed, arch, dims, metric, budget=None):
    """`budget`: the Stage1Budget of a two-stage method's stage 1, None for other stages."""
    warmup = warmup_updates(opts, updates)
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "fairseq-train"), opts.data,
        "--user-dir", PLUGIN_DIR,
        "--task", "glue_ehft", "--criterion", "sentence_prediction_ehft",
        "--arch", arch, "--peft", stage.peft, "--head-type", opts.head_type,
        "--finetune-from-model", start, "--save-dir", save_dir,
        "--optimizer", "ehft_adamw", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-06",
        "--weight-decay", "0.1", "--lr", repr(stage.lr), "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", str(warmup), "--total-num-update", str(updates),
        "--max-update", str(updates), "--max-epoch", "0", "--batch-size", str(opts.batch_size),
        "--seed", str(seed), "--best-checkpoint-metric", metric,
        "--maximize-best-checkpoint-metric", "--no-epoch-checkpoints",
        "--log-format", "json", "--log-file", os.path.join(save_dir, LOG),
    ]
    for name in DIMS + CARRIED:
        if name in dims:
            cmd += ["--" + name.replace("_", "-"), str(dims[name])]
    if getattr(opts, "log_drift", False):
        cmd += ["--log-drift-from", os.path.abspath(opts.checkpoint)]
    if stage.child_share:  # written before the stage starts (_child_mask)
        cmd += ["--child-tuning-mask", os.path.join(save_dir, CHILD_MASK_FILE)]
    if budget is not None:
        cmd += stage1_rules.fairseq_flags(budget, warmup)
    return cmd + tracking.fairseq_flags(opts, save_dir) + list(opts.fairseq_args)


class HandOver:
    """What a stage that gives its head to a later one hands over (its best or last head,
    and with `reserve_plan` its PEFT parameters), and what its head is checked against: the
    dev metric of always predicting one class."""

    def __init__(self, head, reserve_plan, level, examples, raise_flag):
        self.head, self.reserve_plan = head, reserve_plan
        self.level, self.examples, self.raise_flag = level, examples, raise_flag

    def checkpoint(self, stage_dir):
        best = os.path.join(stage_dir, BEST_CHECKPOINT)
        return best if self.head == stage1_rules.BEST and os.path.isfile(best) else \
            os.path.join(stage_dir, LAST_CHECKPOINT)


def _train_stage(stage, stage_dir, n, cmd, run_dir, metric, hand_over,
                 leader=True, env=None, replaced=False, seconds_before=None, display=None,
                 capped=False):
    """Run fairseq-train for the stage (unless it already reached its updates or stopped on
    its patience), then record it; `hand_over` (a HandOver): a later stage starts from this
    stage's head. Under torchrun only the leader (rank 0) records; `replaced`: the
    leader is deleting an older run here (--overwrite), whose checkpoints do not count;
    `seconds_before`: how long the stage's preparation took (its start checkpoint, a
    Child-Tuning mask); `display` (progress.Display): what the user sees of it (None:
    fairseq-train's own output); `capped`: `n` is a cap (a plateau stage 1)."""
    # wall seconds of this launch (a stage resumed from an earlier one shows only the last):
    # what a second stage costs beyond its updates is read from these
    seconds = dict(seconds_before or {})
    log = os.path.join(stage_dir, LOG)
    # stopped_early reads the log; trained_updates loads the whole checkpoint
    if not replaced and (stage1_rules.stopped_early(log) or trained_updates(stage_dir) >= n):
        # fairseq finished but the launcher stopped before recording it; running fairseq
        # again would take one more update past --max-update
        logger.info("%s: %s already trained for %d updates", run_dir, stage.name, n)
    else:
        logger.info("%s: %s (%s, lr %g, %d updates)", run_dir, stage.name, stage.peft,
                    stage.lr, n)
        started = time.perf_counter()
        # the leader's fairseq-train output goes to the stage's directory; the other ranks'
        # (fairseq logs only warnings there) to the console, as torchrun shows them
        captured = display is not None and display.captures and leader
        output = os.path.join(stage_dir, progress.OUTPUT) if captured else None
        label = "/".join(os.path.normpath(run_dir).split(os.sep)[-3:]) + " " + stage.name
        watch = display.watch(log, label, n, metric, capped) \
            if display is not None and leader else None
        if _run_child(cmd, env, output, watch) != 0:
            if output:
                raise EhftError("%s of %s failed (relaunch to resume); the end of "
                                "fairseq-train's output, %s:\n%s"
                                % (stage.name, run_dir, output, progress.tail(output).rstrip()))
            raise EhftError("%s of %s failed; see %s (relaunch to resume)"
                            % (stage.name, run_dir, os.path.join(stage_dir, LOG)))
        seconds["fairseq_train"] = round(time.perf_counter() - started, 3)
    if not leader:
        return
    if "fairseq_train" in seconds:  # fairseq_train - training: its start-up and shutdown
        seconds["training"] = training_seconds(log)
    records = valid_records(log)
    extra = {"trained_updates": last_update(log)}
    if hand_over:
        started = time.perf_counter()
        write_handover(stage_dir, HEAD_NAME, hand_over.reserve_plan,
                       checkpoint=hand_over.checkpoint(stage_dir))
        seconds["hand_over"] = round(time.perf_counter() - started, 3)
        check = stage1_rules.head_check(records, metric, hand_over.level, hand_over.examples,
                                        hand_over.head)
        if check is not None:
            extra["head"] = check
            if check["at_chance"]:
                print(stage1_rules.warning(run_dir, stage.name, check, hand_over.raise_flag),
                      file=sys.stderr, flush=True)
    if "--disable-validation" not in cmd and not validated_at_the_end(log, records):
        # a record without its final validation would only fail later, in `ehft report`
        raise EhftError("%s of %s finished, but %s holds no validation at its last update (was "
                        "the log removed, or written by another process?); pass --overwrite to "
                        "train the run again" % (stage.name, run_dir, log))
    write_done(stage_dir, n, metric, records, software(), seconds, **extra)
    start = os.path.join(stage_dir, START_FILE)
    if os.path.isfile(start):
        os.remove(start)  # the original checkpoint (and head.safetensors) rebuild it


def _child_mask(stage, cmd):
    """Child-Tuning_D's mask for the stage, written before it starts (a relaunch reuses it);
    the seconds it took."""
    from .child_mask import compute_mask

    at = cmd.index("--child-tuning-mask")
    path = cmd[at + 1]
    if os.path.isfile(path):
        return 0.0
    started = time.perf_counter()
    logger.info("%s: Fisher information on the training set, for a child of share %g",
                os.path.dirname(path), stage.child_share)
    compute_mask(cmd[:at] + cmd[at + 2:], stage.child_share, path, fisher_clip=stage.fisher_clip)
    return round(time.perf_counter() - started, 3)


def _run_child(cmd, env=None, output=None, watch=None):
    """fairseq-train as a child that dies with the launcher (torchrun stops a failed job
    with SIGTERM, which must reach the training process too); its output appended to
    `output` if given, and `watch` (a progress.StageWatch) polled while it runs."""
    with open(output, "a") if output else contextlib.nullcontext() as sink:
        child = subprocess.Popen(cmd, env=env, stdout=sink,
                                 stderr=subprocess.STDOUT if sink else None)
        try:
            while True:
                try:
                    code = child.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    if watch is not None:
                        watch.poll()
        except BaseException:
            child.terminate()
            child.wait()
            raise
        finally:
            if watch is not None:
                watch.finish()
    return code


def _child_env(launch):
    """Under torchrun, each fairseq-train of the launch (stage k of seed j) meets the other
    ranks' on its own port, MASTER_PORT + 1 + its position, in a store its rank 0 hosts:
    torchrun's store keeps the addresses of the previous stage's processes, and a second
    process group built on it would try to reach them."""
    if "MASTER_PORT" not in os.environ or torchrun_settings(os.environ, cuda=False) is None:
        return None
    return dict(os.environ, MASTER_PORT=str(int(os.environ["MASTER_PORT"]) + 1 + launch),
                TORCHELASTIC_USE_AGENT_STORE="False")


def stage_updates(total, budget):
    """Updates of each stage: one stage gets `total`; stage 1 of two gets its budget's, stage 2
    the total (less stage 1's with the ratio rule, whose total covers both)."""
    if budget is None:
        return [total]
    return [budget.updates, total - budget.updates if budget.rule == stage1_rules.RATIO
            else total]


def run_seed(opts, method, seed, original, state_dims, arch, meta, rank=0, first_launch=0,
             budget=None, level=None, display=None, setting=""):
    """`setting`: the sweep's name for this run's values (sweep.Setting.label), "" for none."""
    run_dir = run_directory(opts.save_dir, meta["task"], method.name, seed, setting)
    # rank 0 alone writes the run directory, and no other `ehft train` may at the same time
    with exclusive(run_dir, "ehft train") if rank == 0 else contextlib.nullcontext():
        _run_seed(opts, method, seed, original, state_dims, arch, meta, rank, first_launch,
                  run_dir, budget, level, display, setting)
    if display is not None and rank == 0:
        done = [os.path.join(run_dir, s.name, DONE_RECORD) for s in method.stages]
        display.line(progress.run_summary(run_dir, [
            (s.name, read_json(path) if os.path.isfile(path) else None)
            for s, path in zip(method.stages, done)]))
    return run_dir


def _run_seed(opts, method, seed, original, state_dims, arch, meta, rank, first_launch, run_dir,
              budget, level, display=None, setting=""):
    updates = stage_updates(opts.total_updates, budget)
    config = {"method": method.name, "data": os.path.abspath(opts.data),
              "checkpoint": os.path.abspath(opts.checkpoint), "seed": seed,
              "total_updates": opts.total_updates, "updates": updates, "arch": arch,
              **({"total_epochs": opts.total_epochs} if getattr(opts, "total_epochs", None)
                 is not None else {}),
              **({"log_drift": True} if getattr(opts, "log_drift", False) else {}),
              "head_type": opts.head_type, "batch_size": opts.batch_size,
              "warmup_ratio": opts.warmup_ratio, "fairseq_args": list(opts.fairseq_args),
              "stages": [dict({"name": s.name, "peft": s.peft, "lr": s.lr},
                              **({"reserve": True} if s.reserve else {}),
                              **({"child_share": s.child_share} if s.child_share else {}),
                              **({"fisher_clip": s.fisher_clip} if s.fisher_clip else {}))
                         for s in method.stages]}
    if budget is not None and budget.record() is not None:
        config["stage1"] = budget.record()
    if setting:
        config["setting"] = setting
    leader = rank == 0
    previous, replace = recorded_commands(run_dir, config, opts.overwrite)
    if leader:
        if replace:
            shutil.rmtree(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        # run.json first: another rank checking the directory meanwhile sees either nothing
        # or this record, never stage files without it
        write_run_record(run_dir, meta["task"], config, previous)
    commands = {}
    metric = meta["metrics"][0]
    start_seconds = {}
    for index, (stage, n) in enumerate(zip(method.stages, updates)):
        stage_dir = os.path.join(run_dir, stage.name)
        if leader:
            os.makedirs(stage_dir, exist_ok=True)
        done = os.path.join(stage_dir, DONE_RECORD)
        if os.path.isfile(done) and stage.name in previous:
            commands[stage.name] = previous[stage.name]  # as it was run
        else:
            head = stage.head_from and os.path.join(run_dir, stage.head_from, HEAD_FILE)
            peft = stage.reserve and os.path.join(run_dir, stage.head_from, PEFT_FILE)
            # rank 0 writes it; another rank's fairseq-train reads it only once rank 0's has
            # joined the process group, that is, after it was written
            started = time.perf_counter()
            start = write_stage_start(original, opts.checkpoint, head,
                                      os.path.join(stage_dir, START_FILE), peft, write=leader)
            start_seconds[stage.name] = {
                "start_checkpoint": round(time.perf_counter() - started, 3)}
            commands[stage.name] = stage_command(opts, stage, n, start, stage_dir, seed, arch,
                                                 state_dims, metric,
                                                 budget if index == 0 and budget else None)
        cmd = commands[stage.name]
        if leader:
            write_run_record(run_dir, meta["task"], config, commands)
        if os.path.isfile(done) and not replace:
            logger.info("%s: %s already done, skipped", run_dir, stage.name)
            continue
        if stage.child_share and leader:
            start_seconds.setdefault(stage.name, {})["child_mask"] = _child_mask(stage, cmd)
        hand_over = None
        if any(later.head_from == stage.name for later in method.stages):
            reserve = any(later.head_from == stage.name and later.reserve
                          for later in method.stages)
            hand_over = HandOver(
                budget.head, parse_plan(stage.peft, state_dims["encoder_layers"])
                if reserve else None, *level,
                "--stage1-max-epochs, --stage1-patience or --lr-stage1"
                if budget.rule == stage1_rules.PLATEAU else "stage 1's budget or --lr-stage1")
        _train_stage(stage, stage_dir, n, cmd, run_dir, metric, hand_over,
                     leader, tracking.child_env(
                         opts, stage_dir, [os.path.join(run_dir, s.name)
                                           for s in method.stages[:index]],
                         _child_env(first_launch + index)),
                     replace, start_seconds.get(stage.name), display,
                     capped=index == 0 and budget is not None
                     and budget.rule == stage1_rules.PLATEAU)


@dataclass
class Planned:
    """One setting of the command (of its sweep): its options, resolved method, stage-1
    budget and the path part naming it."""
    opts: object
    method: object
    budget: object
    setting: str


def plan_runs(opts, meta, num_layers):
    """Every setting of the command, resolved and checked before anything runs: a bad value
    anywhere in a sweep stops it before its first run."""
    planned, seen = [], set()
    for setting in sweep.settings(opts):
        one = setting.options(opts)
        method = resolve_method(one.method, num_layers)
        apply_recipe(one, meta, method)
        method = recipe_method(one, method, num_layers)
        method = with_learning_rates(method, one.lr_stage1, one.lr_stage2)
        label = setting.label(rate_flags(method) | {"batch_size"})
        if (method.name, label) in seen:  # a swept rate this method does not use
            continue
        seen.add((method.name, label))
        planned.append(Planned(one, method, plan_stage1(one, method, meta), label))
    return planned


def train(opts):
    # under srun, the step's variables become torchrun's before anything counts processes
    # (--total-epochs) or ranks
    adopt_slurm_step()
    tracking.take_from_fairseq_args(opts)
    tracking.check(opts)
    meta = load_metadata(opts.data)
    original = read_original(opts.checkpoint)
    dims = model_args(original)
    arch = opts.arch or _ARCH.get(dims["arch"], dims["arch"])
    if not arch.startswith("roberta_ehft"):
        raise EhftError("cannot tell the architecture of %s (arch %r); pass --arch "
                        "roberta_ehft_base or roberta_ehft_large" % (opts.checkpoint, dims["arch"]))
    planned = plan_runs(opts, meta, dims["encoder_layers"])
    sweep.check_size(len(planned), len(opts.seeds), getattr(opts, "yes", False))
    # last of the checks: reading the dictionary imports fairseq, seconds the others spare
    check_fits_data(original, opts.data, opts.checkpoint)
    if getattr(opts, "dry_run", False):
        return [run_dir for p in planned
                for run_dir in dry_run(p.opts, p.method, original, dims, arch, meta, p.budget,
                                       p.setting)]
    level = None
    if any(p.budget is not None for p in planned):
        level = stage1_rules.constant_level(opts.data, meta, meta["metrics"][0])
    # under torchrun (or srun: see train's start) every rank runs this launcher and its
    # fairseq-train children join one world; rank 0 alone writes the run directory
    world = torchrun_settings(os.environ, cuda=False)
    rank = world["distributed_rank"] if world else 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the child too
    display = progress.Display(getattr(opts, "display", "progress") or "progress",
                               every=getattr(opts, "progress_every", 0) or 0)
    run_dirs, launch = [], 0
    for p in planned:
        for seed in opts.seeds:
            run_dirs.append(run_seed(p.opts, p.method, seed, original, dims, arch, meta, rank,
                                     first_launch=launch, budget=p.budget,
                                     level=level if p.budget is not None else None,
                                     display=display, setting=p.setting))
            launch += len(p.method.stages)
    return run_dirs


def plan_stage1(opts, method, meta):
    """The Stage1Budget of a two-stage method; None for one stage, which ignores the
    --stage1-* flags (so one command line can loop over methods). A
    --validate-interval-updates after '--' sets the plateau's interval too, so that every
    validation saves and checkpoint_best.pt is the best head."""
    if not method.two_stage:
        return None
    budget = stage1_rules.stage1_budget(opts, meta, opts.total_updates)
    user = list(opts.fairseq_args)
    if budget.rule == stage1_rules.PLATEAU and "--validate-interval-updates" in user[:-1]:
        every = int(user[len(user) - 1 - user[::-1].index("--validate-interval-updates") + 1])
        budget = stage1_rules.replace_interval(budget, every)
    return budget


def dry_run(opts, method, original, dims, arch, meta, budget=None, setting=""):
    """Every seed's and stage's exact fairseq-train command, printed, nothing run or written.
    A stage that starts from stage 1's head starts from START, which `ehft handover` writes
    (as `ehft train` does) once stage 1 has finished; a Child-Tuning stage reads the mask
    `ehft child-mask` writes (as `ehft train` does) before it starts."""
    import shlex

    updates = stage_updates(opts.total_updates, budget)
    metric = meta["metrics"][0]
    run_dirs = []
    for seed in opts.seeds:
        run_dir = run_directory(opts.save_dir, meta["task"], method.name, seed, setting)
        run_dirs.append(run_dir)
        print("# run %s: %s%s, seed %d" % (run_dir, method.name,
                                           " (%s)" % setting if setting else "", seed))
        for stage, n in zip(method.stages, updates):
            stage_dir = os.path.join(run_dir, stage.name)
            head = stage.head_from and os.path.join(run_dir, stage.head_from, HEAD_FILE)
            start = write_stage_start(original, opts.checkpoint, head,
                                      os.path.join(stage_dir, START_FILE), write=False)
            print("# seed %d, %s: --peft %s, lr %g, %s" % (
                seed, stage.name, stage.peft, stage.lr,
                budget.describe(metric) if budget and stage is method.stages[0]
                else "%d updates" % n))
            if start != os.path.abspath(opts.checkpoint) and not stage.head_from:
                print("# %s: %s without its classification heads (ehft train writes it)"
                      % (start, opts.checkpoint))
            if stage.head_from:
                print("ehft handover --stage1 %s --checkpoint %s --out %s%s" % (
                    shlex.quote(os.path.join(run_dir, stage.head_from, LAST_CHECKPOINT
                                             if budget.head == stage1_rules.LAST
                                             else BEST_CHECKPOINT)),
                    shlex.quote(os.path.abspath(opts.checkpoint)), shlex.quote(start),
                    " --reserve '%s'" % method.stages[0].peft if stage.reserve else ""))
            cmd = [str(part) for part in stage_command(
                opts, stage, n, start, stage_dir, seed, arch, dims, metric,
                budget if budget and stage is method.stages[0] else None)]
            if stage.child_share:
                at = cmd.index("--child-tuning-mask")
                print("ehft child-mask --share %g%s --out %s -- %s" % (
                    stage.child_share, " --fisher-clip %g" % stage.fisher_clip
                    if stage.fisher_clip else "", shlex.quote(cmd[at + 1]),
                    " ".join(shlex.quote(part) for part in cmd[1:at] + cmd[at + 2:])))
            print(" ".join(shlex.quote(part) for part in cmd))
    return run_dirs

