"""fairseq's JSON --log-file of a stage (train.log): its stats records, validations and
training time."""

import json
import os
import re


def log_records(log_path):
    """Every JSON stats record of a fairseq --log-file (--log-format json), in order, each
    once; none if the file does not exist. Stock fairseq adds one more file handler to its
    progress logger every epoch, so epoch k writes each of its lines k times in a row (logs
    written without the plugin loaded, or before fairseq_compat/log_file.py): a line equal to
    the one before it is that copy (two real records always differ, in wps at least)."""
    if not os.path.isfile(log_path):
        return
    previous = None
    with open(log_path) as f:
        for line in f:
            if line == previous:
                continue
            previous = line
            stats = stats_of(line)
            if stats is not None:
                yield stats


def stats_of(line):
    """The JSON stats record a --log-file line holds, or None (other lines; the configuration
    dump also starts with "{" but is not JSON)."""
    try:
        stats = json.loads(line) if line.startswith("{") else None
    except ValueError:
        return None
    return stats if isinstance(stats, dict) else None


def valid_records(log_path):
    """fairseq's JSON validation stats from a --log-file, with the subset name added."""
    records = []
    for stats in log_records(log_path):
        subset = next((k.split("_")[0] for k in stats if re.match(r"valid\d*_", k)), None)
        if subset:
            records.append(dict(stats, subset=subset))
    return records


def validated_at_the_end(log_path, records):
    """Whether `records` (valid_records of the log) hold a validation at the stage's last
    update. fairseq validates whenever it stops (--max-update, or --max-epoch, --patience ...
    first) unless validation is disabled, and then writes the epoch's train stats with that
    update count."""
    last = last_update(log_path)
    validated = {int(float(r[r["subset"] + "_num_updates"])) for r in records
                 if r["subset"] + "_num_updates" in r}
    return last is not None and last in validated


def last_update(log_path):
    """The update count at which the stage's last launch ended (its last epoch-summary train
    record), or None before one ended."""
    ends = [int(float(stats["train_num_updates"])) for stats in log_records(log_path)
            if "train_num_updates" in stats]
    return ends[-1] if ends else None


def train_records(log_path):
    """fairseq's per-interval training stats (train_inner), one per update count in order, as
    floats (fairseq logs the last interval of a run twice)."""
    records = {}
    for stats in log_records(log_path):
        # train_inner records carry unprefixed keys; epoch summaries "train_*"
        if "num_updates" in stats and "loss" in stats:
            record = {k: _number(v) for k, v in stats.items()}
            records[record["num_updates"]] = record
    return [records[n] for n in sorted(records)]


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


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
