"""`ehft report`: dev results of finished runs, mean ± std over seeds per method × task.

Input: the run directories `ehft train` writes (see `rundir`). One run gives one number per
task column: the validation of its last stage chosen by `select` ("best": the record with
the best headline metric, i.e. fairseq's checkpoint_best; "last": the final record), read in
the task's *paper metric* (accuracy; CoLA: MCC; STS-B: Pearson), so that the Avg column is
comparable with published tables. MNLI's mismatched dev set (valid1) is read at the update
chosen on the matched one and reported as its own column.

Outputs, next to `--out X.md`: X.csv (every metric of every cell), X.json
({task: {method: {mean, std, seeds}}, "avg": {method: ...}}), X-curves-TASK.png (dev
metric against total updates, mean over seeds, per method) and X-bars.png.
Published reference rows (references/published.json, or --published-file) are printed in
their own tables, never mixed with measured rows.

collect.py reads the runs and summarises them, stats.py holds the statistics, render.py
writes the text files and plots.py the figures.
"""

import json
import os

from ...atomic import write_file
from .collect import ReportError, collect, read_run, summarise
from .plots import plot_bars, plot_curves
from .render import (PUBLISHED, load_published, render_csv, render_markdown, render_versus,
                     summary_json)
from .settings import check_poolable, select_on_dev
from .stats import (avg_difference_interval, detectable_difference, paper_gains, welch_p,
                    welch_p_of_cells)

__all__ = ["report", "ReportError", "collect", "read_run", "summarise", "load_published",
           "render_versus", "PUBLISHED", "avg_difference_interval", "detectable_difference",
           "paper_gains", "welch_p", "welch_p_of_cells"]


def report(roots, out, select="best", published_files=None, plots=True, how="", baseline=None,
           on_dev=False):
    """Write the report files; returns their paths. `baseline`: the method every other one is
    compared with (default: ft, when there are runs of it). `on_dev`: runs of one method
    that differ in their settings (a sweep) are reduced to the setting with the best mean dev
    score (settings.select_on_dev); without it such runs are refused."""
    if not out.endswith(".md"):
        raise ReportError("--out %s: expected a .md file name (the CSV, JSON and PNG files go "
                          "next to it)" % out)
    runs, unfinished = collect(roots, select)
    if not runs:
        raise ReportError("no finished runs under %s (looked for run.json with a finished last "
                          "stage)%s" % (", ".join(roots), "; unfinished: %d" % len(unfinished)
                                        if unfinished else ""))
    choices = None
    if on_dev:
        runs, choices = select_on_dev(runs)
    else:
        check_poolable(runs)
    summary = summarise(runs)
    if baseline is not None and baseline not in summary.methods:
        raise ReportError("--baseline %s: no finished runs of it; methods: %s"
                          % (baseline, ", ".join(summary.methods)))
    published = load_published(published_files if published_files is not None else [PUBLISHED])
    prefix = out[:-len(".md")]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    written = []
    if plots:
        written += plot_curves(runs, summary, prefix) + [plot_bars(summary, prefix)]
    write_file(prefix + ".csv", render_csv(runs))
    write_file(prefix + ".json", json.dumps(summary_json(summary, choices), indent=2) + "\n")
    write_file(out, render_markdown(summary, published, unfinished, how, baseline or "ft",
                                    choices))
    return [out, prefix + ".csv", prefix + ".json"] + written
