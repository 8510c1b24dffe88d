"""`ehft train`: plan every setting of the command as a RunConfig (config.py), then run each
seed's planned stages with fairseq-train (commands.py), one run directory per seed (its
layout: `rundir`).

A stage with done.json is not run again; an unfinished stage resumes from its own
checkpoint_last.pt (fairseq's --finetune-from-model only applies to a first launch). The
hand-over is `handover`'s, and fairseq does the training. Longer than the plugin's other
modules because the seed and stage loop keeps its recovery cases together: a relaunch, the
ranks of torchrun, --overwrite, a stage that fairseq finished but the launcher did not record.
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
from .commands import dry_run, stage_command, stage_start
from .config import RunConfig
from .handover import HEAD_NAME, write_handover
from .locks import exclusive
from .methods import rate_flags, resolve_method, with_learning_rates
from .pretrained import check_fits_data, model_args, read_original
from .provenance import software
from .recipes import apply_recipe, recipe_method
from .rundir import (BEST_CHECKPOINT, DONE_RECORD, LAST_CHECKPOINT, LOG, START_FILE, last_update,
                     read_json, record_launch, recorded_commands, recorded_launches,
                     run_directory, trained_updates, training_seconds, valid_records,
                     validated_at_the_end, wall_seconds, write_done, write_run_record)

logger = logging.getLogger(__name__)

_ARCH = {"roberta_base": "roberta_ehft_base", "roberta_large": "roberta_ehft_large",
         "roberta": "roberta_ehft_base"}


@dataclass
class SeedRun:
    """One seed's run of a planned config, as this process takes part in it: rank 0 (the
    leader) writes the run directory; `first_launch`: how many fairseq-train launches came
    before it in this command (torchrun ports); `level`: the constant predictor's dev metric
    and the examples it was measured on (the hand-over's check); `display`: what the user
    sees (progress.Display, None: fairseq-train's own output); `replace`: the leader is
    deleting an older run there (--overwrite), whose checkpoints do not count."""
    config: RunConfig
    seed: int
    run_dir: str
    rank: int = 0
    first_launch: int = 0
    level: tuple = None
    display: object = None
    replace: bool = False

    @property
    def leader(self):
        return self.rank == 0


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


def _train_stage(run, stage, cmd, hand_over, env=None, seconds_before=None):
    """Run fairseq-train for the planned stage (unless it already reached its updates or
    stopped on its patience), then record it; `hand_over` (a HandOver): a later stage starts
    from this stage's head. Under torchrun only the leader (rank 0) records;
    `seconds_before`: how long the stage's preparation took (its start checkpoint, a
    Child-Tuning mask)."""
    run_dir, leader, display, metric = run.run_dir, run.leader, run.display, run.config.metric
    stage_dir, n, replaced = os.path.join(run_dir, stage.name), stage.updates, run.replace
    # wall seconds of this launch; each launch is also appended to launches.jsonl, so that a
    # stage resumed over several launches is charged for the earlier ones too
    seconds = dict(seconds_before or {})
    log = os.path.join(stage_dir, LOG)
    # stopped_early reads the log; trained_updates loads the whole checkpoint
    if not replaced and (stage1_rules.stopped_early(log) or trained_updates(stage_dir) >= n):
        # fairseq finished but the launcher stopped before recording it; running fairseq
        # again would take one more update past --max-update
        logger.info("%s: %s already trained for %d updates", run_dir, stage.name, n)
    else:
        logger.info("%s: %s (%s, lr %g, %d updates)", run_dir, stage.name, stage.stage.peft,
                    stage.stage.lr, n)
        started = time.perf_counter()
        # the leader's fairseq-train output goes to the stage's directory; the other ranks'
        # (fairseq logs only warnings there) to the console, as torchrun shows them
        captured = display is not None and display.captures and leader
        output = os.path.join(stage_dir, progress.OUTPUT) if captured else None
        label = "/".join(os.path.normpath(run_dir).split(os.sep)[-3:]) + " " + stage.name
        watch = display.watch(log, label, n, metric, stage.capped) \
            if display is not None and leader else None
        code = None
        try:
            code = _run_child(cmd, env, output, watch)
        finally:  # a failed or stopped launch costs its time too
            # one reading for both records: the launch's charge is its fairseq_train exactly
            elapsed = time.perf_counter() - started
            if leader:
                record_launch(stage_dir, wall_seconds(seconds) + elapsed, code)
        if code != 0:
            if output:
                raise EhftError("%s of %s failed (relaunch to resume); the end of "
                                "fairseq-train's output, %s:\n%s"
                                % (stage.name, run_dir, output, progress.tail(output).rstrip()))
            raise EhftError("%s of %s failed; see %s (relaunch to resume)"
                            % (stage.name, run_dir, os.path.join(stage_dir, LOG)))
        seconds["fairseq_train"] = round(elapsed, 3)
    if not leader:
        return
    if "fairseq_train" in seconds:  # fairseq_train - training: its start-up and shutdown
        seconds["training"] = training_seconds(log)
    records = valid_records(log)
    launches = recorded_launches(stage_dir)
    # this launch ran fairseq-train (and so recorded itself last) when it timed one
    earlier = launches[:-1] if "fairseq_train" in seconds else launches
    if earlier:
        seconds["earlier_launches"] = round(sum(earlier), 3)
    extra = {"trained_updates": last_update(log)}
    if launches:  # none: trained by a version that did not record them, so count unknown
        extra["launches"] = len(launches)
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


def run_seed(config, seed, original, rank=0, first_launch=0, level=None, display=None):
    """Train every stage of a planned config for one seed (those already done are skipped);
    its run directory."""
    run_dir = run_directory(config.save_dir, config.task, config.resolved.name, seed,
                            config.setting)
    run = SeedRun(config, seed, run_dir, rank, first_launch, level, display)
    # rank 0 alone writes the run directory, and no other `ehft train` may at the same time
    with exclusive(run_dir, "ehft train") if rank == 0 else contextlib.nullcontext():
        _run_seed(run, original)
    if display is not None and rank == 0:
        done = [os.path.join(run_dir, s.name, DONE_RECORD) for s in config.stages]
        display.line(progress.run_summary(run_dir, [
            (s.name, read_json(path) if os.path.isfile(path) else None)
            for s, path in zip(config.stages, done)]))
    return run_dir


def _run_seed(run, original):
    config, run_dir, leader = run.config, run.run_dir, run.leader
    record = config.record(run.seed)
    previous, run.replace = recorded_commands(run_dir, record, config.overwrite)
    if leader:
        if run.replace:
            shutil.rmtree(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        # run.json first: another rank checking the directory meanwhile sees either nothing
        # or this record, never stage files without it
        write_run_record(run_dir, config.task, record, previous)
    commands = {}
    start_seconds = {}
    for stage in config.stages:
        stage_dir = os.path.join(run_dir, stage.name)
        if leader:
            os.makedirs(stage_dir, exist_ok=True)
        done = os.path.join(stage_dir, DONE_RECORD)
        if os.path.isfile(done) and stage.name in previous:
            commands[stage.name] = previous[stage.name]  # as it was run
        else:
            started = time.perf_counter()
            start = stage_start(config, run_dir, stage, original, write=leader)
            start_seconds[stage.name] = {
                "start_checkpoint": round(time.perf_counter() - started, 3)}
            commands[stage.name] = stage_command(config, stage, run.seed, start, stage_dir)
        cmd = commands[stage.name]
        if leader:
            write_run_record(run_dir, config.task, record, commands)
        if os.path.isfile(done) and not run.replace:
            logger.info("%s: %s already done, skipped", run_dir, stage.name)
            continue
        if stage.stage.child_share and leader:
            start_seconds.setdefault(stage.name, {})["child_mask"] = _child_mask(stage.stage, cmd)
        _train_stage(run, stage, cmd, _hand_over(run, stage),
                     tracking.child_env(config, stage_dir,
                                        [os.path.join(run_dir, s.name)
                                         for s in config.stages[:stage.index]],
                                        _child_env(run.first_launch + stage.index)),
                     start_seconds.get(stage.name))


def _hand_over(run, stage):
    """The HandOver of a stage whose head a later stage starts from, else None."""
    config = run.config
    later = [s.stage for s in config.stages if s.stage.head_from == stage.name]
    if not later:
        return None
    budget = config.budget
    reserve = any(s.reserve for s in later)
    return HandOver(
        budget.head, parse_plan(stage.stage.peft, config.dims["encoder_layers"])
        if reserve else None, *run.level,
        "--stage1-max-epochs, --stage1-patience or --lr-stage1"
        if budget.rule == stage1_rules.PLATEAU else "stage 1's budget or --lr-stage1")


def plan_runs(opts, meta, dims, arch):
    """Every setting of the command as a planned RunConfig, each resolved and checked before
    anything runs: a bad value anywhere in a sweep stops it before its first run."""
    planned, seen = [], set()
    for setting in sweep.settings(opts):
        config = RunConfig.from_options(setting.options(opts))
        method = resolve_method(config.method, dims["encoder_layers"])
        config = apply_recipe(config, meta, method)
        method = recipe_method(config, method, dims["encoder_layers"])
        method = with_learning_rates(method, config.lr_stage1, config.lr_stage2)
        label = setting.label(rate_flags(method) | {"batch_size"})
        if (method.name, label) in seen:  # a swept rate this method does not use
            continue
        seen.add((method.name, label))
        planned.append(config.planned(method, plan_stage1(config, method, meta), setting=label,
                                      task=meta["task"], metric=meta["metrics"][0],
                                      dims=dims, arch=arch))
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
    configs = plan_runs(opts, meta, dims, arch)
    sweep.check_size(len(configs), len(opts.seeds), getattr(opts, "yes", False))
    # last of the checks: reading the dictionary imports fairseq, seconds the others spare
    check_fits_data(original, opts.data, opts.checkpoint)
    if getattr(opts, "dry_run", False):
        return [run_dir for config in configs for run_dir in dry_run(config, original)]
    level = None
    if any(config.budget is not None for config in configs):
        level = stage1_rules.constant_level(opts.data, meta, meta["metrics"][0])
    # under torchrun (or srun: see train's start) every rank runs this launcher and its
    # fairseq-train children join one world; rank 0 alone writes the run directory
    world = torchrun_settings(os.environ, cuda=False)
    rank = world["distributed_rank"] if world else 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the child too
    display = progress.Display(getattr(opts, "display", "progress") or "progress",
                               every=getattr(opts, "progress_every", 0) or 0)
    run_dirs, launch = [], 0
    for config in configs:
        for seed in config.seeds:
            run_dirs.append(run_seed(config, seed, original, rank, first_launch=launch,
                                     level=level if config.budget is not None else None,
                                     display=display))
            launch += len(config.stages)
    return run_dirs


def plan_stage1(config, method, meta):
    """The Stage1Budget of a two-stage method; None for one stage, which ignores the
    --stage1-* flags (so one command line can loop over methods). A
    --validate-interval-updates after '--' sets the plateau's interval too, so that every
    validation saves and checkpoint_best.pt is the best head."""
    if not method.two_stage:
        return None
    budget = stage1_rules.stage1_budget(config, meta, config.total_updates)
    user = list(config.fairseq_args)
    if budget.rule == stage1_rules.PLATEAU and "--validate-interval-updates" in user[:-1]:
        every = int(user[len(user) - 1 - user[::-1].index("--validate-interval-updates") + 1])
        budget = stage1_rules.replace_interval(budget, every)
    return budget
