"""`ehft train`: run a method's stages with fairseq-train, one run directory per seed.

    <save-dir>/<task>/<method>/seed<k>/
        run.json              the resolved configuration and every stage's command
        stage1/ (or finetune/) fairseq save dir: checkpoints, train.log (JSON), done.json
                              (validations, the software that finished the stage, and how
                              long its fairseq-train took)
        stage1/head.safetensors   the hand-over: stage 1's final head, nothing else
        stage1/peft.safetensors   -reserve variants only: stage 1's PEFT parameters
        stage2/start.pt       original checkpoint + that head (removed once the stage is done;
                              also written, without head, for an original that holds one)

A stage with done.json is not run again; an unfinished stage resumes from its own
checkpoint_last.pt (fairseq's --finetune-from-model only applies to a first launch). The
launcher builds argument lists and calls the pure hand-over functions; fairseq does the
training.
"""

import contextlib
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from .atomic import atomic_file, write_file
from .checkpoints import load_adapter, load_checkpoint, load_tensors, save_adapter, save_tensors
from .data.binarize import load_metadata
from .distributed import torchrun_settings
from .errors import CheckpointError, EhftError
from .handover import extract_head, extract_peft, graft_head, graft_params, strip_heads
from .locks import exclusive
from .methods import MethodError, resolve_method, split_updates, with_learning_rates
from .peft.plan import parse_plan
from .provenance import software
from .recipes import get_recipe

logger = logging.getLogger(__name__)

HEAD_FORMAT = "ehft-head/1"
_ARCH = {"roberta_base": "roberta_ehft_base", "roberta_large": "roberta_ehft_large",
         "roberta": "roberta_ehft_base"}
# the model settings a stage must build with to load the checkpoint (as saved in it)
_CARRIED = ("max_positions", "activation_fn", "layer_norm_eps")
_DIMS = ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
         "encoder_attention_heads")


def read_original(path):
    """The pretrained checkpoint as saved (not fairseq's upgraded view of it), read once:
    its sizes, its vocabulary and the stage starts all come from this one read."""
    from .safe_loading import safe_load

    if not os.path.isfile(path):
        raise CheckpointError("--checkpoint %s: file not found" % path)
    try:
        return safe_load(path, map_location="cpu")
    except CheckpointError:
        raise
    except Exception as e:  # a truncated file fails inside torch's zip reader
        raise CheckpointError("--checkpoint %s: cannot be read (%s)" % (path, e)) from None


def model_args(state):
    """Model sizes and arch from `args` (older checkpoints) or `cfg.model` (a Namespace, or a
    plain dict in exported checkpoints)."""
    args = state.get("args") or state["cfg"]["model"]
    values = args if isinstance(args, dict) else vars(args)
    dims = {k: values[k] for k in _DIMS}
    dims["arch"] = values.get("arch") or values.get("_name")  # hydra's configs: _name
    dims.update({k: values[k] for k in _CARRIED if values.get(k) is not None})
    return dims


def check_fits_data(state, data, path):
    """The checkpoint's vocabulary must be the data's dictionary (plus <mask>)."""
    from .data.tokenisers import load_dictionary

    dictionary = load_dictionary(os.path.join(data, "input0", "dict.txt"))
    # 2019 releases name the encoder "decoder.sentence_encoder"; fairseq renames it on load
    [rows] = [v.shape[0] for k, v in state["model"].items()
              if k.endswith(".sentence_encoder.embed_tokens.weight")]
    if rows != len(dictionary):
        raise CheckpointError(
            "--checkpoint %s has %d token embeddings but the dictionary of %s has %d entries: "
            "the data was prepared with another dictionary (ehft prepare --srcdict)"
            % (path, rows, data, len(dictionary)))


def method_slug(name):
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name)


def stage_command(opts, stage, updates, start, save_dir, seed, arch, dims, metric):
    warmup = int(round(opts.warmup_ratio * updates))
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "fairseq-train"), opts.data,
        "--user-dir", os.path.dirname(os.path.abspath(__file__)),
        "--task", "glue_ehft", "--criterion", "sentence_prediction_ehft",
        "--arch", arch, "--peft", stage.peft, "--head-type", opts.head_type,
        "--finetune-from-model", start, "--save-dir", save_dir,
        "--optimizer", "ehft_adamw", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-06",
        "--weight-decay", "0.1", "--lr", repr(stage.lr), "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", str(warmup), "--total-num-update", str(updates),
        "--max-update", str(updates), "--max-epoch", "0", "--batch-size", str(opts.batch_size),
        "--seed", str(seed), "--best-checkpoint-metric", metric,
        "--maximize-best-checkpoint-metric", "--no-epoch-checkpoints",
        "--log-format", "json", "--log-file", os.path.join(save_dir, "train.log"),
    ]
    for name in _DIMS + _CARRIED:
        if name in dims:
            cmd += ["--" + name.replace("_", "-"), str(dims[name])]
    if getattr(opts, "log_drift", False):
        cmd += ["--log-drift-from", os.path.abspath(opts.checkpoint)]
    return cmd + list(opts.fairseq_args)


def log_records(log_path):
    """Every JSON stats record of a fairseq --log-file (--log-format json), in order, each
    once; none if the file does not exist. fairseq adds one more file handler to its progress
    logger every epoch, so epoch k writes each of its lines k times in a row: a line equal to
    the one before it is that copy (two real records always differ, in wps at least)."""
    if not os.path.isfile(log_path):
        return
    previous = None
    with open(log_path) as f:
        for line in f:
            if line == previous:
                continue
            previous = line
            try:  # the configuration dump also starts with "{" but is not JSON
                stats = json.loads(line) if line.startswith("{") else None
            except ValueError:
                continue
            if isinstance(stats, dict):
                yield stats


def valid_records(log_path):
    """fairseq's JSON validation stats from a --log-file, with the subset name added."""
    records = []
    for stats in log_records(log_path):
        subset = next((k.split("_")[0] for k in stats if re.match(r"valid\d*_", k)), None)
        if subset:
            records.append(dict(stats, subset=subset))
    return records


def training_seconds(log_path):
    """fairseq's own "done training in X seconds" (its training loop, validations and
    checkpoint saves included) of the last launch that finished, or None."""
    if not os.path.isfile(log_path):
        return None
    seconds = None
    with open(log_path) as f:
        for line in f:
            found = re.match(r"done training in ([0-9.]+) seconds", line)
            if found:
                seconds = float(found.group(1))
    return seconds


def _write_json(path, value):
    write_file(path, json.dumps(value, indent=2))


def hand_over(stage1_dir, head_name, reserve_plan=None):
    """stage 1's final head -> stage1/head.safetensors (small: the head only); with
    `reserve_plan` (the stage-1 plan of a -reserve variant) also what that plan trained in
    the backbone -> stage1/peft.safetensors."""
    state = load_checkpoint(os.path.join(stage1_dir, "checkpoint_last.pt"))
    head = extract_head(state["model"], head_name)
    path = os.path.join(stage1_dir, "head.safetensors")
    save_tensors(head, path, {"format": HEAD_FORMAT, "head_name": head_name})
    if reserve_plan is not None:
        save_adapter(extract_peft(state["model"], reserve_plan),
                     os.path.join(stage1_dir, "peft.safetensors"), reserve_plan)
    return path


def stage_start(original, original_path, head_path, out_path, peft_path=None, write=True):
    """The checkpoint a stage starts from: the original backbone (`original`, the state read
    from `original_path`) with stage 1's head grafted on (`head_path`), or with no head at all
    so that a new one is built; `peft_path` (-reserve variants) lays stage 1's PEFT
    parameters over it. When the original holds no head and nothing is grafted, its file is
    used as it is (no copy). `write=False` only says where the start is (the ranks other
    than 0 under torchrun)."""
    import torch

    heads = any(k.startswith("classification_heads.") for k in original["model"])
    if not head_path and not heads:
        return os.path.abspath(original_path)
    if not write:
        return out_path
    state = dict(original)  # the caller's state is shared by every stage and seed
    if head_path:
        head, _ = load_tensors(head_path, HEAD_FORMAT)
        state["model"] = graft_head(original["model"], head)
        if peft_path:
            state["model"] = graft_params(state["model"], load_adapter(peft_path)[0])
    else:
        state["model"] = strip_heads(original["model"])
    with atomic_file(out_path) as tmp:
        torch.save(state, tmp)
    return out_path


def _trained_updates(stage_dir):
    """Updates recorded in the stage's checkpoint_last.pt (0 if there is none)."""
    from .safe_loading import safe_load

    path = os.path.join(stage_dir, "checkpoint_last.pt")
    if not os.path.isfile(path):
        return 0
    history = safe_load(path, map_location="cpu").get("optimizer_history") or [{}]
    return history[-1].get("num_updates", 0)


def _check_run_dir(run_dir, config, overwrite):
    """(commands recorded before, whether the directory is to be replaced); a directory that
    holds something else is refused. Reads only: every rank under torchrun makes the same
    decision, and only rank 0 acts on it."""
    recorded = os.path.join(run_dir, "run.json")
    if not (os.path.isdir(run_dir) and os.listdir(run_dir)):
        return {}, False
    if overwrite:
        return {}, True
    if not os.path.isfile(recorded):
        raise EhftError("%s holds files of something else; pass --overwrite to replace them"
                        % run_dir)
    with open(recorded) as f:
        record = json.load(f)
    previous = record["config"]
    if previous != config:
        changed = sorted(k for k in set(config) | set(previous)
                         if config.get(k) != previous.get(k))
        raise EhftError("%s holds a run with other settings (%s); pass --overwrite to "
                        "start again" % (run_dir, ", ".join(changed)))
    return record.get("commands", {}), False


def _train_stage(stage, stage_dir, n, cmd, run_dir, metric, gives_head, reserve_plan,
                 leader=True, env=None, replaced=False, start_seconds=None):
    """Run fairseq-train for the stage (unless it already reached its updates), then record it;
    `gives_head`: a later stage starts from this stage's head (and, with `reserve_plan`, from
    its PEFT parameters). Under torchrun only the leader (rank 0) records; `replaced`: the
    leader is deleting an older run here (--overwrite), whose checkpoints do not count;
    `start_seconds`: how long writing the stage's start checkpoint took."""
    # wall seconds of this launch (a stage resumed from an earlier one shows only the last):
    # what a second stage costs beyond its updates is read from these
    seconds = {} if start_seconds is None else {"start_checkpoint": start_seconds}
    if not replaced and _trained_updates(stage_dir) >= n:
        # fairseq finished but the launcher stopped before recording it; running fairseq
        # again would take one more update past --max-update
        logger.info("%s: %s already trained for %d updates", run_dir, stage.name, n)
    else:
        logger.info("%s: %s (%s, lr %g, %d updates)", run_dir, stage.name, stage.peft,
                    stage.lr, n)
        started = time.perf_counter()
        if _run_child(cmd, env) != 0:
            raise EhftError("%s of %s failed; see %s (relaunch to resume)"
                            % (stage.name, run_dir, os.path.join(stage_dir, "train.log")))
        seconds["fairseq_train"] = round(time.perf_counter() - started, 3)
    if not leader:
        return
    log = os.path.join(stage_dir, "train.log")
    if "fairseq_train" in seconds:  # fairseq_train - training: its start-up and shutdown
        seconds["training"] = training_seconds(log)
    if gives_head:
        started = time.perf_counter()
        hand_over(stage_dir, "sentence_classification_head", reserve_plan)
        seconds["hand_over"] = round(time.perf_counter() - started, 3)
    records = valid_records(log)
    if "--disable-validation" not in cmd and not _validated_at_the_end(log, records):
        # a record without its final validation would only fail later, in `ehft report`
        raise EhftError("%s of %s finished, but %s holds no validation at its last update (was "
                        "the log removed, or written by another process?); pass --overwrite to "
                        "train the run again" % (stage.name, run_dir, log))
    _write_json(os.path.join(stage_dir, "done.json"),
                {"updates": n, "metric": metric, "valid": records, "software": software(),
                 "seconds": seconds})
    start = os.path.join(stage_dir, "start.pt")
    if os.path.isfile(start):
        os.remove(start)  # the original checkpoint (and head.safetensors) rebuild it


def _validated_at_the_end(log_path, records):
    """Whether `records` (valid_records of the log) hold a validation at the stage's last
    update. fairseq validates whenever it stops (--max-update, or --max-epoch, --patience ...
    first) unless validation is disabled, and then writes the epoch's train stats with that
    update count."""
    ends = [int(float(stats["train_num_updates"])) for stats in log_records(log_path)
            if "train_num_updates" in stats]
    validated = {int(float(r[r["subset"] + "_num_updates"])) for r in records
                 if r["subset"] + "_num_updates" in r}
    return bool(ends) and ends[-1] in validated


def _run_child(cmd, env=None):
    """fairseq-train as a child that dies with the launcher (torchrun stops a failed job
    with SIGTERM, which must reach the training process too)."""
    child = subprocess.Popen(cmd, env=env)
    try:
        return child.wait()
    except BaseException:
        child.terminate()
        child.wait()
        raise


def _child_env(launch):
    """Under torchrun, each fairseq-train of the launch (stage k of seed j) meets the other
    ranks' on its own port, MASTER_PORT + 1 + its position, in a store its rank 0 hosts:
    torchrun's store keeps the addresses of the previous stage's processes, and a second
    process group built on it would try to reach them."""
    if "MASTER_PORT" not in os.environ or torchrun_settings(os.environ, cuda=False) is None:
        return None
    return dict(os.environ, MASTER_PORT=str(int(os.environ["MASTER_PORT"]) + 1 + launch),
                TORCHELASTIC_USE_AGENT_STORE="False")


def run_directory(opts, meta, method, seed):
    return os.path.join(opts.save_dir, meta["task"], method_slug(method.name), "seed%d" % seed)


def run_seed(opts, method, seed, original, state_dims, arch, meta, rank=0, first_launch=0):
    run_dir = run_directory(opts, meta, method, seed)
    # rank 0 alone writes the run directory, and no other `ehft train` may at the same time
    with exclusive(run_dir, "ehft train") if rank == 0 else contextlib.nullcontext():
        _run_seed(opts, method, seed, original, state_dims, arch, meta, rank, first_launch,
                  run_dir)
    return run_dir


def _run_seed(opts, method, seed, original, state_dims, arch, meta, rank, first_launch, run_dir):
    updates = split_updates(opts.total_updates, method)
    config = {"method": method.name, "data": os.path.abspath(opts.data),
              "checkpoint": os.path.abspath(opts.checkpoint), "seed": seed,
              "total_updates": opts.total_updates, "updates": updates, "arch": arch,
              **({"total_epochs": opts.total_epochs} if getattr(opts, "total_epochs", None)
                 is not None else {}),
              **({"log_drift": True} if getattr(opts, "log_drift", False) else {}),
              "head_type": opts.head_type, "batch_size": opts.batch_size,
              "warmup_ratio": opts.warmup_ratio, "fairseq_args": list(opts.fairseq_args),
              "stages": [dict({"name": s.name, "peft": s.peft, "lr": s.lr},
                              **({"reserve": True} if s.reserve else {}))
                         for s in method.stages]}
    leader = rank == 0
    previous, replace = _check_run_dir(run_dir, config, opts.overwrite)
    if leader:
        if replace:
            shutil.rmtree(run_dir)
        os.makedirs(run_dir, exist_ok=True)
        # run.json first: another rank checking the directory meanwhile sees either nothing
        # or this record, never stage files without it
        _write_json(os.path.join(run_dir, "run.json"),
                    {"task": meta["task"], "config": config, "commands": previous})
    commands = {}
    metric = meta["metrics"][0]
    start_seconds = {}
    for index, (stage, n) in enumerate(zip(method.stages, updates)):
        stage_dir = os.path.join(run_dir, stage.name)
        if leader:
            os.makedirs(stage_dir, exist_ok=True)
        done = os.path.join(stage_dir, "done.json")
        if os.path.isfile(done) and stage.name in previous:
            commands[stage.name] = previous[stage.name]  # as it was run
        else:
            head = stage.head_from and os.path.join(run_dir, stage.head_from, "head.safetensors")
            peft = stage.reserve and os.path.join(run_dir, stage.head_from, "peft.safetensors")
            # rank 0 writes it; another rank's fairseq-train reads it only once rank 0's has
            # joined the process group, that is, after it was written
            started = time.perf_counter()
            start = stage_start(original, opts.checkpoint, head,
                                os.path.join(stage_dir, "start.pt"), peft, write=leader)
            start_seconds[stage.name] = round(time.perf_counter() - started, 3)
            commands[stage.name] = stage_command(opts, stage, n, start, stage_dir, seed, arch,
                                                 state_dims, metric)
        cmd = commands[stage.name]
        if leader:
            _write_json(os.path.join(run_dir, "run.json"),
                        {"task": meta["task"], "config": config, "commands": commands})
        if os.path.isfile(done) and not replace:
            logger.info("%s: %s already done, skipped", run_dir, stage.name)
            continue
        gives_head = any(later.head_from == stage.name for later in method.stages)
        reserve = any(later.head_from == stage.name and later.reserve for later in method.stages)
        _train_stage(stage, stage_dir, n, cmd, run_dir, metric, gives_head,
                     parse_plan(stage.peft, state_dims["encoder_layers"]) if reserve else None,
                     leader, _child_env(first_launch + index), replace,
                     start_seconds.get(stage.name))


def apply_recipe(opts, meta):
    """Fill the options a --recipe sets, unless given on the command line; its fairseq
    arguments go before the user's, so the user's win. --total-epochs becomes updates."""
    if opts.total_updates is not None and getattr(opts, "total_epochs", None) is not None:
        raise MethodError("give --total-updates or --total-epochs, not both")
    defaults = {"total_updates": None, "batch_size": 32, "warmup_ratio": 0.1, "lr_stage2": None}
    if opts.recipe:
        recipe = get_recipe(opts.recipe, meta["task"])
        defaults = {"total_updates": recipe.total_updates, "batch_size": recipe.batch_size,
                    "warmup_ratio": recipe.warmup_ratio, "lr_stage2": recipe.lr}
        opts.fairseq_args = list(recipe.fairseq_args) + list(opts.fairseq_args)
    if getattr(opts, "total_epochs", None) is not None:
        defaults["total_updates"] = None  # the epochs decide, not the recipe's updates
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    if getattr(opts, "total_epochs", None) is not None:
        opts.total_updates = epochs_to_updates(opts.total_epochs, meta, opts.batch_size)
    if opts.total_updates is None:
        raise EhftError("--total-updates or --total-epochs is required (or a --recipe that "
                        "sets the updates)")


def epochs_to_updates(epochs, meta, batch_size):
    """Updates in `epochs` passes over the training set: ceil(examples / batch size) a pass
    (glue_ehft keeps the last, smaller batch). With --max-tokens limiting batches, fairseq makes
    more, smaller batches, so the same updates then cover less than `epochs` passes."""
    if not epochs > 0:
        raise MethodError("--total-epochs %g: expected > 0" % epochs)
    if batch_size <= 0:
        raise MethodError("--batch-size %d: expected > 0" % batch_size)
    per_epoch = -(-meta["splits"]["train"]["examples"] // batch_size)
    return max(1, int(math.ceil(epochs * per_epoch - 1e-9)))


def train(opts):
    meta = load_metadata(opts.data)
    original = read_original(opts.checkpoint)
    check_fits_data(original, opts.data, opts.checkpoint)
    dims = model_args(original)
    arch = opts.arch or _ARCH.get(dims["arch"], dims["arch"])
    if not arch.startswith("roberta_ehft"):
        raise EhftError("cannot tell the architecture of %s (arch %r); pass --arch "
                        "roberta_ehft_base or roberta_ehft_large" % (opts.checkpoint, dims["arch"]))
    apply_recipe(opts, meta)
    method = resolve_method(opts.method, dims["encoder_layers"], opts.stage1_ratio)
    method = with_learning_rates(method, opts.lr_stage1, opts.lr_stage2)
    if getattr(opts, "dry_run", False):
        return dry_run(opts, method, original, dims, arch, meta)
    # under torchrun every rank runs this launcher and its fairseq-train children join one
    # world; rank 0 alone writes the run directory
    world = torchrun_settings(os.environ, cuda=False)
    rank = world["distributed_rank"] if world else 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stops the child too
    return [run_seed(opts, method, seed, original, dims, arch, meta, rank,
                     first_launch=i * len(method.stages))
            for i, seed in enumerate(opts.seeds)]


def dry_run(opts, method, original, dims, arch, meta):
    """Every seed's and stage's exact fairseq-train command, printed, nothing run or written.
    A stage that starts from stage 1's head starts from START, which `ehft handover` writes
    (as `ehft train` does) once stage 1 has finished."""
    import shlex

    updates = split_updates(opts.total_updates, method)
    run_dirs = []
    for seed in opts.seeds:
        run_dir = run_directory(opts, meta, method, seed)
        run_dirs.append(run_dir)
        for stage, n in zip(method.stages, updates):
            stage_dir = os.path.join(run_dir, stage.name)
            head = stage.head_from and os.path.join(run_dir, stage.head_from, "head.safetensors")
            start = stage_start(original, opts.checkpoint, head,
                                os.path.join(stage_dir, "start.pt"), write=False)
            print("# seed %d, %s: --peft %s, lr %g, %d updates" % (seed, stage.name,
                                                                   stage.peft, stage.lr, n))
            if start != os.path.abspath(opts.checkpoint) and not stage.head_from:
                print("# %s: %s without its classification heads (ehft train writes it)"
                      % (start, opts.checkpoint))
            if stage.head_from:
                print("ehft handover --stage1 %s --checkpoint %s --out %s%s" % (
                    shlex.quote(os.path.join(run_dir, stage.head_from, "checkpoint_last.pt")),
                    shlex.quote(os.path.abspath(opts.checkpoint)), shlex.quote(start),
                    " --reserve '%s'" % method.stages[0].peft if stage.reserve else ""))
            print(" ".join(shlex.quote(str(part)) for part in stage_command(
                opts, stage, n, start, stage_dir, seed, arch, dims, meta["metrics"][0])))
    return run_dirs

