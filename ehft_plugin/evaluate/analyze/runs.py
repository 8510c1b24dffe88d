"""The runs `ehft analyze` reads (`rundir.Run`): found under the given roots, labelled, and
their training curves."""

import os
import re
from typing import List

from ...errors import EhftError
from ...train.rundir import Run, RunError, find_run_dirs


class AnalyzeError(EhftError):
    """Runs that cannot be analysed, or a diagnostic that has nothing to work on."""


def find_runs(paths) -> List[Run]:
    """Every run directory (holding run.json) under `paths`, finished or not."""
    runs = []
    for root in paths:
        if not os.path.isdir(root):
            raise AnalyzeError("%s: no such directory" % root)
        try:
            found = [Run.read(run_dir) for run_dir in find_run_dirs(root)]
        except RunError as e:
            raise AnalyzeError(str(e)) from None
        if not found:
            raise AnalyzeError("%s holds no run directories (run.json, written by `ehft train`)"
                               % root)
        runs += found
    return runs


def training_curve(run, key):
    """[(total updates, value of `key`)] over every stage of `run` (a stage's updates count
    from the end of the one before)."""
    curve, offset = [], 0
    for stage, n in zip(run.stages, run.updates):
        for r in run.train_records(stage):
            if isinstance(r.get(key), float):
                curve.append((offset + int(r["num_updates"]), r[key]))
        offset += n
    return curve


def is_ehft(method):
    return re.match(r"ehft-", method) is not None


def check_runs(runs):
    """Labels the runs (a method trained with several stage-1 budgets gets one label per
    budget) and refuses the same (task, label, seed) twice: every figure would count it
    twice."""
    budgets = {}
    for run in runs:
        budgets.setdefault((run.task, run.method), set()).add(run.stage1)
    for run in runs:
        if len(budgets[(run.task, run.method)]) > 1:
            run.shown_stage1 = True
    seen = {}
    for run in runs:
        key = (run.task, run.label, run.seed)
        if key in seen:
            raise AnalyzeError("%s and %s are both %s seed %d on %s; analyse one of them"
                               % (seen[key], run.path, run.label, run.seed, run.task))
        seen[key] = run.path
    return runs
