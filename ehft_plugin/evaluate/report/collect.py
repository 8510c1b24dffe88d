"""Finished runs under the given roots, and their summary per method × column."""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from ...data.task_table import column_key, paper_metric
from ...errors import EhftError
from ...train.rundir import Run, RunError, find_run_dirs
from .stats import mean_std


class ReportError(EhftError):
    """Run directories that cannot be read, or nothing to report."""


def read_run(run_dir, select="best"):
    """A finished run with its dev results selected (`Run.select`), or None when its last
    stage has not finished."""
    try:
        run = Run.read(run_dir)
        return run if run.select(select) else None
    except RunError as e:
        raise ReportError(str(e)) from None


def collect(roots, select="best"):
    """(finished runs, unfinished run directories) under `roots`."""
    runs, unfinished = [], []
    for root in roots:
        if not os.path.isdir(root):
            raise ReportError("%s: no such directory" % root)
        for run_dir in find_run_dirs(root):
            run = read_run(run_dir, select)
            (runs.append(run) if run else unfinished.append(run_dir))
    return runs, unfinished


@dataclass
class Summary:
    columns: List[str]
    methods: List[str]
    # (column, method) -> {"metric", "values" (per seed, in seed order), "seeds", "mean", "std"}
    cells: Dict[Tuple[str, str], dict]
    avg: Dict[str, dict]  # method -> {"mean", "tasks"} over every column (None if a cell is missing)
    metrics: Dict[str, str]  # column -> paper metric
    # methods whose every run trained in one stage with a parameter-efficient plan
    single_stage_peft: List[str] = field(default_factory=list)
    # (task, method) -> {"runs", "updates", "seconds" (means over runs), "stage1": [heads],
    # "at_chance": runs whose stage 1 made no head, "last_launch_only": runs whose resumed
    # stages were timed by their last launch alone}
    cost: Dict[Tuple[str, str], dict] = field(default_factory=dict)


def summarise(runs) -> Summary:
    columns = sorted({c for r in runs for c in r.cells}, key=column_key)
    methods = sorted({r.method for r in runs}, key=lambda m: (m != "ft", m))
    metrics = {c: paper_metric(c, set.intersection(*[set(r.cells[c]) for r in runs
                                                     if c in r.cells]),
                               next((r.headline for r in runs if r.task == c), None))
               for c in columns}
    cells = {}
    for column in columns:
        for method in methods:
            chosen = sorted((r for r in runs if r.method == method and column in r.cells),
                            key=lambda r: r.seed)
            if not chosen:
                continue
            values = [r.cells[column][metrics[column]] for r in chosen]
            mean, std = mean_std(values)
            cells[column, method] = {"metric": metrics[column], "values": values,
                                     "seeds": [r.seed for r in chosen], "mean": mean,
                                     "std": std}
    avg = {}
    for method in methods:
        present = [cells[c, method]["mean"] for c in columns if (c, method) in cells]
        avg[method] = {"mean": sum(present) / len(present) if len(present) == len(columns)
                       else None, "tasks": len(present)}
    single = [m for m in methods if all(r.single_stage_peft for r in runs if r.method == m)]
    return Summary(columns, methods, cells, avg, metrics, single, cost_of(runs))


def by_task_and_method(runs):
    """{(task, method): its runs, in the order given}."""
    groups = {}
    for run in runs:
        groups.setdefault((run.task, run.method), []).append(run)
    return groups


def _mean_or_none(values):
    """The mean, or None when a value is missing: a mean over the timed runs alone would
    pass for the whole group's."""
    return None if None in values else sum(values) / len(values)


def cost_of(runs):
    """What each task × method spent: mean updates (every stage, as trained) and wall seconds
    over its runs, and its stage-1 heads: a gain bought with more compute, or a stage 1 that
    made no head, is visible beside the score."""
    cost = {}
    for key, group in by_task_and_method(runs).items():
        heads = [h for h in (r.stage1_head() for r in group) if h]
        cost[key] = {"runs": len(group),
                     "updates": sum(sum(r.updates) for r in group) / len(group),
                     "seconds": _mean_or_none([r.wall_seconds() for r in group]),
                     "last_launch_only": sum(1 for r in group if not r.counts_every_launch()),
                     "stage1": heads,
                     "at_chance": sum(1 for h in heads if h.get("at_chance"))}
    return cost
