"""The report's figures: dev curves per task and one bar chart; `pyplot` and `save_figure`
are the figure helpers `ehft analyze` shares."""

import math
import os

from ...atomic import atomic_file
from ...data.task_table import column_key, display_name
from .render import column_title


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_curves(runs, summary, prefix):
    """One PNG per task: the paper metric against total updates, mean over seeds."""
    plt = pyplot()

    paths = []
    for task in sorted({r.task for r in runs}, key=column_key):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for method in summary.methods:
            points = {}
            for run in (r for r in runs if r.task == task and r.method == method):
                for x, y in run.curve:
                    points.setdefault(x, []).append(y)
            if points:
                xs = sorted(points)
                [line] = ax.plot(xs, [sum(points[x]) / len(points[x]) for x in xs], marker="o",
                                 markersize=3, label=method)
                starts = {x for r in runs if r.task == task and r.method == method
                          for x in r.stage_starts}
                for x in starts:  # where stage 2 begins
                    ax.axvline(x, color=line.get_color(), linestyle=":", alpha=0.6)
        ax.set_xlabel("updates (both stages; dotted: stage 2 starts)")
        ax.set_ylabel("dev %s" % summary.metrics.get(task, ""))
        ax.set_title("%s: dev metric during training (mean over seeds)" % display_name(task))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = "%s-curves-%s.png" % (prefix, task)
        save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    _remove_stale_curves(prefix, paths)
    return paths


def _remove_stale_curves(prefix, kept):
    """A curve PNG of a task that has no finished run any more (a run directory removed or
    moved) would otherwise sit beside the report as if it belonged to it."""
    directory, stem = os.path.split(os.path.abspath(prefix))
    pattern = stem + "-curves-"
    kept = {os.path.abspath(p) for p in kept}
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.startswith(pattern) and name.endswith(".png") and path not in kept:
            os.remove(path)


def plot_bars(summary, prefix):
    """One grouped bar chart: every column, one bar per method, std as error bars."""
    plt = pyplot()

    columns, methods = summary.columns, summary.methods
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.2 * len(columns) + 2), 4.2))
    for i, method in enumerate(methods):
        xs, ys, errs = [], [], []
        for j, column in enumerate(columns):
            cell = summary.cells.get((column, method))
            if cell:
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                ys.append(cell["mean"])
                errs.append(cell["std"] or 0.0)
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=method)
    low = min(c["mean"] - (c["std"] or 0.0) for c in summary.cells.values())
    # zoom on the differences; MCC and correlations can be negative
    ax.set_ylim(bottom=math.floor(low / 10.0) * 10.0 - 10.0 if low < 0
                else max(0.0, math.floor(low / 10.0) * 10.0 - 10.0))
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([column_title(c, summary.metrics[c]) for c in columns], fontsize=8)
    ax.set_ylabel("dev metric (%)")
    ax.set_title("mean ± std over seeds")
    ax.legend(fontsize=8)
    path = prefix + "-bars.png"
    save_figure(fig, path)
    plt.close(fig)
    return path


def save_figure(fig, path):
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
