"""The runs `ehft analyze` reads: run.json, each stage's done.json and fairseq's JSON train.log."""

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..errors import EhftError
from ..launcher import log_records
from ..report import paper_metric, read_run, run_dirs


class AnalyzeError(EhftError):
    """Runs that cannot be analysed, or a diagnostic that has nothing to work on."""


@dataclass
class Run:
    path: str
    task: str
    method: str
    seed: int
    config: dict
    commands: Dict[str, List[str]]
    shown_share: Optional[float] = None

    @property
    def stages(self) -> List[str]:
        return [s["name"] for s in self.config["stages"]]

    @property
    def updates(self) -> List[int]:
        return list(self.config["updates"])

    @property
    def share(self) -> Optional[float]:
        """Stage 1's share of the updates of a two-stage method, None for one stage."""
        return self.updates[0] / sum(self.updates) if len(self.updates) > 1 else None

    @property
    def label(self) -> str:
        """The method; with the stage-1 share where runs of the method differ in it (set by
        `check_runs`)."""
        return self.method if self.shown_share is None else "%s (stage 1 %.0f%%)" % (
            self.method, 100 * self.shown_share)

    def stage_dir(self, stage):
        return os.path.join(self.path, stage)

    def finished(self):
        return all(os.path.isfile(os.path.join(self.stage_dir(s), "done.json"))
                   for s in self.stages)

    def final_checkpoint(self):
        """The model at the end of training (last stage's checkpoint_last.pt), or None when
        the run kept no checkpoints."""
        path = os.path.join(self.stage_dir(self.stages[-1]), "checkpoint_last.pt")
        return path if os.path.isfile(path) else None

    def handed_over_head(self):
        """stage1/head.safetensors of a two-stage method, or None."""
        if len(self.stages) < 2:
            return None
        path = os.path.join(self.stage_dir(self.stages[0]), "head.safetensors")
        return path if os.path.isfile(path) else None

    def dev_score(self):
        """(paper metric, its value at the selected dev validation) or None if unfinished."""
        finished = read_run(self.path)
        if finished is None or self.task not in finished.cells:
            return None
        metric = paper_metric(self.task, finished.cells[self.task])
        return metric, finished.cells[self.task][metric]


def find_runs(paths) -> List[Run]:
    """Every run directory (holding run.json) under `paths`, finished or not."""
    runs = []
    for root in paths:
        if not os.path.isdir(root):
            raise AnalyzeError("%s: no such directory" % root)
        found = [_read(run_dir) for run_dir in run_dirs(root)]
        if not found:
            raise AnalyzeError("%s holds no run directories (run.json, written by `ehft train`)"
                               % root)
        runs += found
    return runs


def _read(run_dir):
    path = os.path.join(run_dir, "run.json")
    try:
        with open(path) as f:
            record = json.load(f)
        config = record["config"]
        return Run(run_dir, record.get("task") or run_dir.split(os.sep)[-3], config["method"],
                   int(config["seed"]), config, record.get("commands") or {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AnalyzeError("%s: not a run record of ehft train (%s: %s)"
                           % (path, type(e).__name__, e)) from None


def train_records(stage_dir):
    """fairseq's per-interval training stats (train_inner) of a stage, one per update count
    in order, as floats (fairseq logs the last interval of a run twice)."""
    records = {}
    for stats in log_records(os.path.join(stage_dir, "train.log")):
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


def training_curve(run, key):
    """[(total updates, value of `key`)] over every stage of `run` (a stage's updates count
    from the end of the one before)."""
    curve, offset = [], 0
    for stage, n in zip(run.stages, run.updates):
        for r in train_records(run.stage_dir(stage)):
            if isinstance(r.get(key), float):
                curve.append((offset + int(r["num_updates"]), r[key]))
        offset += n
    return curve


def is_ehft(method):
    return re.match(r"ehft-", method) is not None


def check_runs(runs):
    """Labels the runs (a method trained with several stage-1 shares gets one label per
    share) and refuses the same (task, label, seed) twice: every figure would count it
    twice."""
    shares = {}
    for run in runs:
        shares.setdefault((run.task, run.method), set()).add(run.share)
    for run in runs:
        if len(shares[(run.task, run.method)]) > 1:
            run.shown_share = run.share
    seen = {}
    for run in runs:
        key = (run.task, run.label, run.seed)
        if key in seen:
            raise AnalyzeError("%s and %s are both %s seed %d on %s; analyse one of them"
                               % (seen[key], run.path, run.label, run.seed, run.task))
        seen[key] = run.path
    return runs
