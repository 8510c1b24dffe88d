"""Paths of a run directory and the records `ehft train` writes in it (run.json, done.json).

Readers of these files go through `Run` (run.py); writers through the functions here, so that
the layout and the formats have one definition."""

import json
import os
import re

from ...atomic import write_file
from ...errors import EhftError

RUN_RECORD = "run.json"
DONE_RECORD = "done.json"
LOG = "train.log"
LAST_CHECKPOINT = "checkpoint_last.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"
HEAD_FILE = "head.safetensors"
PEFT_FILE = "peft.safetensors"
START_FILE = "start.pt"
CHILD_MASK_FILE = "child_mask.safetensors"
LAUNCHES = "launches.jsonl"
MEASURED = "measured.json"


class RunError(EhftError):
    """A run directory that cannot be read or written as `ehft train` lays it out."""


def method_slug(name):
    """A method name as a directory name."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", name)


def run_directory(save_dir, task, method_name, seed, setting=""):
    """SAVE_DIR/TASK/METHOD/seedK, or SAVE_DIR/TASK/METHOD/SETTING/seedK in a sweep."""
    return os.path.join(save_dir, task, method_slug(method_name), *([setting] if setting else []),
                        "seed%d" % seed)


def find_run_dirs(root):
    """The run directories (those holding run.json) under `root`, sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RUN_RECORD in filenames:
            dirnames[:] = []  # stage directories hold no runs
            yield dirpath


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise RunError("%s: cannot be read as JSON (%s)" % (path, e)) from None


def write_json(path, value):
    write_file(path, json.dumps(value, indent=2))


def write_run_record(run_dir, task, config, commands):
    """run.json: the resolved configuration (a RecordedConfig, or its dict form, which is
    read as run.json would be) and every stage's fairseq-train command."""
    from .record import RecordedConfig

    if not isinstance(config, RecordedConfig):
        config = RecordedConfig.from_dict(config, os.path.join(run_dir, RUN_RECORD))
    write_json(os.path.join(run_dir, RUN_RECORD),
               {"task": task, "config": config.to_dict(), "commands": commands})


def write_done(stage_dir, updates, metric, valid, software, seconds, **extra):
    """done.json: the stage finished; its planned updates, validations, the software that
    ran it and how long its parts took (seconds); `extra`: the updates it trained
    (trained_updates, fewer than planned when it stopped on its patience), how many times its
    fairseq-train was launched (launches; `seconds` then holds the earlier ones' total as
    earlier_launches) and, for a stage that hands its head over, what that head scored
    (head)."""
    write_json(os.path.join(stage_dir, DONE_RECORD),
               {"updates": updates, "metric": metric, "valid": valid, "software": software,
                "seconds": seconds, **extra})


def record_launch(stage_dir, seconds, exit_code):
    """Appends one launch of the stage's fairseq-train to launches.jsonl: its wall seconds,
    the stage's preparation included, and its exit code (None: the launcher was stopped while
    it ran). A stage resumed over several launches is charged for all of them."""
    with open(os.path.join(stage_dir, LAUNCHES), "a") as f:
        f.write(json.dumps({"seconds": round(seconds, 3), "exit": exit_code}) + "\n")


def recorded_launches(stage_dir):
    """The launches record_launch wrote for the stage, oldest first ([] for none)."""
    path = os.path.join(stage_dir, LAUNCHES)
    if not os.path.isfile(path):
        return []
    launches = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                launches.append(float(json.loads(line)["seconds"]))
            except (ValueError, KeyError, TypeError) as e:
                raise RunError("%s, line %d: expected a launch record {\"seconds\": ..., "
                               "\"exit\": ...} (%s)" % (path, number, e)) from None
    return launches


def wall_seconds(seconds):
    """The wall seconds of a done.json `seconds` record: every timing but `training`,
    fairseq's loop, which lies inside its fairseq-train process (`earlier_launches`: those
    of a resumed stage before its last)."""
    return sum(float(v) for k, v in seconds.items()
               if k != "training" and isinstance(v, (int, float)))


def recorded_commands(run_dir, config, overwrite):
    """(commands recorded before, whether the directory is to be replaced); a directory that
    holds something else, or a run with other settings, is refused. Reads only: every rank
    under torchrun makes the same decision, and only rank 0 acts on it."""
    recorded = os.path.join(run_dir, RUN_RECORD)
    if not (os.path.isdir(run_dir) and os.listdir(run_dir)):
        return {}, False
    if overwrite:
        return {}, True
    if not os.path.isfile(recorded):
        raise RunError("%s holds files of something else; pass --overwrite to replace them"
                       % run_dir)
    from .record import RecordedConfig

    record = read_json(recorded)
    previous = RecordedConfig.from_dict(record.get("config"), recorded).to_dict()
    config = config.to_dict()
    if previous != config:
        changed = sorted(k for k in set(config) | set(previous)
                         if config.get(k) != previous.get(k))
        raise RunError("%s holds a run with other settings (%s); pass --overwrite to start "
                       "again" % (run_dir, ", ".join(changed)))
    return record.get("commands", {}), False


def trained_updates(stage_dir):
    """Updates recorded in the stage's checkpoint_last.pt (0 if there is none)."""
    from ...fairseq_compat.safe_loading import safe_load

    path = os.path.join(stage_dir, LAST_CHECKPOINT)
    if not os.path.isfile(path):
        return 0
    history = safe_load(path, map_location="cpu").get("optimizer_history") or [{}]
    return history[-1].get("num_updates", 0)
