"""`ehft report`: dev results of finished runs, mean ± std over seeds per method × task.

Input: the run directories `ehft train` writes (SAVE_DIR/TASK/METHOD/seedK/run.json and each
stage's done.json, which holds fairseq's validation records). One run gives one number per
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
"""

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .atomic import atomic_file, write_file
from .errors import EhftError

PUBLISHED = os.path.join(os.path.dirname(__file__), "references", "published.json")
PUBLISHED_FORMAT = "ehft-published/1"
PAPER_METRIC = {"cola": "mcc", "stsb": "pearson"}  # otherwise accuracy
DISPLAY = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP",
           "mnli": "MNLI-m", "mnli-mm": "MNLI-mm", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI",
           "boolq": "BoolQ", "cb": "CB", "copa": "COPA", "wic": "WiC",
           "superglue-rte": "RTE (SuperGLUE)"}
# columns in the usual GLUE, then SuperGLUE order; other tasks follow alphabetically
ORDER = ("mnli", "mnli-mm", "qnli", "qqp", "rte", "sst2", "mrpc", "cola", "stsb", "wnli",
         "boolq", "cb", "copa", "wic", "superglue-rte")


class ReportError(EhftError):
    """Run directories that cannot be read, or nothing to report."""


@dataclass
class Run:
    task: str
    method: str
    seed: int
    path: str
    # column -> {metric: value} of the selected validation
    cells: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # column -> [(total updates, paper metric)] over every stage
    curve: List[Tuple[int, float]] = field(default_factory=list)
    stage_starts: List[int] = field(default_factory=list)  # total updates where stage 2.. start
    plans: Tuple[str, ...] = ()  # each stage's --peft plan

    @property
    def single_stage_peft(self):
        """Trained in one stage with a parameter-efficient plan (not full finetuning)."""
        return len(self.plans) == 1 and self.plans[0] != "full"


def paper_metric(task, available):
    metric = PAPER_METRIC.get(task)
    if metric in available:
        return metric
    return "accuracy" if "accuracy" in available else sorted(available)[0]


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ReportError("%s: cannot be read as JSON (%s)" % (path, e)) from None


def _metrics(record, subset):
    """{metric: float} of one fairseq validation record."""
    prefix = subset + "_"
    out = {}
    for key, value in record.items():
        name = key[len(prefix):]
        if not key.startswith(prefix) or name in ("loss", "nll_loss", "ppl", "wps", "wpb",
                                                   "bsz", "num_updates") or name.startswith(
                                                       "best_"):
            continue
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _column(task, subset):
    if subset == "valid":
        return task
    return task + "-mm" if task == "mnli" and subset == "valid1" else "%s/%s" % (task, subset)


def read_run(run_dir, select="best"):
    """A finished run as a Run, or None when its last stage has not finished."""
    record = _read_json(os.path.join(run_dir, "run.json"))
    try:
        config = record["config"]
        stages = [s["name"] for s in config["stages"]]
        updates = list(config["updates"])
    except (KeyError, TypeError) as e:
        raise ReportError("%s: not a run record of ehft train (missing %s)"
                          % (os.path.join(run_dir, "run.json"), e)) from None
    parts = os.path.normpath(run_dir).split(os.sep)
    task = record.get("task") or parts[-3]
    run = Run(task, config["method"], int(config["seed"]), run_dir,
              plans=tuple(str(s.get("peft", "")) for s in config["stages"]))
    done = {}
    for stage in stages:
        path = os.path.join(run_dir, stage, "done.json")
        if os.path.isfile(path):
            done[stage] = _read_json(path)
    if stages[-1] not in done:
        return None
    final = done[stages[-1]]
    key = "valid_" + str(final.get("metric"))
    valid = [r for r in final.get("valid", []) if r.get("subset") == "valid" and key in r]
    if not valid:
        raise ReportError("%s: holds no validation of the dev set with its metric %r"
                          % (os.path.join(run_dir, stages[-1], "done.json"),
                             final.get("metric")))
    chosen = max(valid, key=lambda r: float(r[key])) if select == "best" else valid[-1]
    at = chosen.get("valid_num_updates")
    for r in final["valid"]:
        subset = r["subset"]
        if subset == "valid" and r is not chosen:
            continue
        if subset != "valid" and r.get(subset + "_num_updates") != at:
            continue
        run.cells[_column(task, subset)] = _metrics(r, subset)
    metric = paper_metric(task, run.cells[task])
    offset = 0
    for stage, n in zip(stages, updates):
        for r in done.get(stage, {}).get("valid", []):
            if r.get("subset") == "valid" and "valid_" + metric in r:
                run.curve.append((offset + int(float(r["valid_num_updates"])),
                                  float(r["valid_" + metric])))
        offset += n
        run.stage_starts.append(offset)
    run.stage_starts.pop()
    return run


def collect(roots, select="best"):
    """(finished runs, unfinished run directories) under `roots`."""
    runs, unfinished = [], []
    for root in roots:
        if not os.path.isdir(root):
            raise ReportError("%s: no such directory" % root)
        for run_dir in run_dirs(root):
            run = read_run(run_dir, select)
            (runs.append(run) if run else unfinished.append(run_dir))
    return runs, unfinished


def run_dirs(root):
    """The run directories of `ehft train` (those holding run.json) under `root`, sorted."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if "run.json" in filenames:
            dirnames[:] = []  # stage directories hold no runs
            yield dirpath


def mean_std(values):
    """Mean and sample standard deviation (n - 1); std is None for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _column_key(column):
    return (ORDER.index(column) if column in ORDER else len(ORDER), column)


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


def summarise(runs) -> Summary:
    columns = sorted({c for r in runs for c in r.cells}, key=_column_key)
    methods = sorted({r.method for r in runs}, key=lambda m: (m != "ft", m))
    metrics = {c: paper_metric(c.split("-mm")[0].split("/")[0],
                               set.intersection(*[set(r.cells[c]) for r in runs if c in r.cells]))
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
    return Summary(columns, methods, cells, avg, metrics, single)


def _fmt(cell):
    if cell is None:
        return "—"
    std = "±%.2f" % cell["std"] if cell["std"] is not None else "±—"
    return "%.2f %s (%d)" % (cell["mean"], std, len(cell["values"]))


def _title(column, metric=None):
    base = DISPLAY.get(column, column)
    return "%s (%s)" % (base, metric) if metric and metric != "accuracy" else base


def load_published(paths):
    tables = []
    for path in paths:
        data = _read_json(path)
        if not isinstance(data, dict) or data.get("format") != PUBLISHED_FORMAT:
            raise ReportError("%s: not a published-results file (expected \"format\": %r)"
                              % (path, PUBLISHED_FORMAT))
        for table in data.get("tables", []):
            for key in ("name", "source", "rows"):
                if key not in table:
                    raise ReportError("%s: a table has no %r" % (path, key))
            tables.append(table)
    return tables


def render_markdown(summary, published, unfinished, how, baseline="ft"):
    out = io.StringIO()
    out.write("# Dev results\n\n")
    out.write("Measured by the runs below (%s). Cells: mean ± sample std over seeds (seeds); "
              "metric per task as in the column title (accuracy unless named). Avg: mean of "
              "a method's cells, only when it has every column.\n\n" % how)
    header = ["method"] + [_title(c, summary.metrics[c]) for c in summary.columns] + ["Avg"]
    out.write("| " + " | ".join(header) + " |\n")
    out.write("|" + "---|" * len(header) + "\n")
    for method in summary.methods:
        avg = summary.avg[method]["mean"]
        row = [method] + [_fmt(summary.cells.get((c, method))) for c in summary.columns]
        row.append("%.2f" % avg if avg is not None else "—")
        out.write("| " + " | ".join(row) + " |\n")
    out.write(render_best_single_stage(summary))
    if baseline in summary.methods and len(summary.methods) > 1:
        out.write(render_versus(summary, baseline,
                                paper_gains(published, summary.columns, baseline)))
    for table in published:
        columns = sorted({c for r in table["rows"] for c in r["values"]}, key=_column_key)
        out.write("\n## Published, not measured here: %s\n\n" % table["name"])
        out.write("Source: %s. Metrics: %s.\n\n" % (table["source"], table.get("metrics", "as "
                                                                              "published")))
        header = ["published row", "method"] + [DISPLAY.get(c, c) for c in columns] + [
            "Avg (published)"]
        out.write("| " + " | ".join(header) + " |\n")
        out.write("|" + "---|" * len(header) + "\n")
        for row in table["rows"]:
            cells = ["%.2f" % row["values"][c] if c in row["values"] else "—" for c in columns]
            avg = "%.2f" % row["avg"] if row.get("avg") is not None else "—"
            out.write("| %s | %s | %s | %s |\n" % (row["label"], row.get("method", ""),
                                                  " | ".join(cells), avg))
        notes = ["%s: %s" % (r["label"], r["note"]) for r in table["rows"] if r.get("note")]
        if notes:
            out.write("\nNotes: " + "; ".join(notes) + ".\n")
    if unfinished:
        out.write("\n## Unfinished runs (not counted)\n\n")
        out.writelines("- %s\n" % path for path in unfinished)
    return out.getvalue()


def render_best_single_stage(summary):
    """One line naming the single-stage PEFT method with the highest Avg, the usual yardstick
    for a two-stage method (is the second stage worth it?), ranked against the others."""
    single = summary.single_stage_peft
    if not single:
        return ""
    ranked = sorted((m for m in single if summary.avg[m]["mean"] is not None),
                    key=lambda m: -summary.avg[m]["mean"])
    if not ranked:
        return ("\nBest single-stage PEFT: none yet, as no single-stage PEFT method (%s) has "
                "every column.\n" % ", ".join(single))
    others = [m for m in single if m not in ranked]
    return ("\nBest single-stage PEFT by Avg: **%s** (%s)%s.\n" % (
        ranked[0], ", ".join("%s %.2f" % (m, summary.avg[m]["mean"]) for m in ranked),
        "; without every column, not ranked: %s" % ", ".join(others) if others else ""))


def welch_p(a, b):
    """Two-sided p of Welch's t-test between two lists of per-seed values; None when either
    side has fewer than two seeds or neither varies (no test possible)."""
    return welch_p_of_cells(_cell(a), _cell(b))


def welch_p_of_cells(a, b):
    """The same test from two summary cells ({"mean", "std", "seeds"}, as in X.json), for
    comparisons made from reports rather than from runs."""
    if min(a["seeds"], b["seeds"]) < 2 or not (a["std"] or b["std"]):
        return None
    from scipy.stats import ttest_ind_from_stats

    return float(ttest_ind_from_stats(a["mean"], a["std"], a["seeds"], b["mean"], b["std"],
                                      b["seeds"], equal_var=False).pvalue)


def _cell(values):
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "seeds": len(values)}


def _avg_difference_spread(summary, method, baseline):
    """(standard error, Welch–Satterthwaite degrees of freedom) of the Avg difference method −
    baseline: the Avg is a mean over columns of per-column means, so its variance is the sum of
    the cells' s²/n over columns². None when a column lacks a cell or a cell has fewer than two
    seeds (no spread to go on), or when no cell varies."""
    parts = []  # (variance of a cell's mean, its seeds) for every cell in the Avg
    for column in summary.columns:
        for m in (method, baseline):
            cell = summary.cells.get((column, m))
            if cell is None or cell["std"] is None:
                return None
            parts.append((cell["std"] ** 2 / len(cell["values"]), len(cell["values"])))
    spread = sum(v for v, _ in parts)
    if spread == 0:
        return None
    freedom = spread ** 2 / sum(v ** 2 / (n - 1) for v, n in parts)
    return math.sqrt(spread) / len(summary.columns), freedom


def avg_difference_interval(summary, method, baseline, level=0.95):
    """(low, high) of the Avg difference method − baseline, or None (see above)."""
    spread = _avg_difference_spread(summary, method, baseline)
    if spread is None:
        return None
    from scipy.stats import t

    half = t.ppf(0.5 + level / 2, spread[1]) * spread[0]
    diff = summary.avg[method]["mean"] - summary.avg[baseline]["mean"]
    return diff - half, diff + half


def detectable_difference(summary, method, baseline, power=0.8, level=0.95):
    """The smallest Avg difference the grid would find beyond seed noise (two-sided test at
    1 − level) with probability `power`, at its seeds and their spread: (t₁₋α/₂ + t_power) · SE
    with the interval's degrees of freedom. None where the interval is."""
    spread = _avg_difference_spread(summary, method, baseline)
    if spread is None:
        return None
    from scipy.stats import t

    return (t.ppf(0.5 + level / 2, spread[1]) + t.ppf(power, spread[1])) * spread[0]


def paper_gains(published, columns, baseline):
    """method -> its published gain over `baseline` on these columns: the mean over them of
    (method − baseline) in the first published table that has both on every one."""
    gains = {}
    for table in published:
        rows = {r["method"]: r for r in table["rows"] if r.get("method")}
        base = rows.get(baseline)
        if base is None or not columns:
            continue
        for method, row in rows.items():
            if method == baseline or method in gains:
                continue
            if all(c in row["values"] and c in base["values"] for c in columns):
                gains[method] = sum(row["values"][c] - base["values"][c]
                                    for c in columns) / len(columns)
    return gains


def p_text(p):
    """Two decimals, or two significant digits below 0.01 (where "0.00" would hide how small)."""
    return "n/a" if p is None else "p %.2f" % p if p >= 0.01 else "p %.1e" % p


def render_versus(summary, baseline, gains=None):
    """Every other method against `baseline`: per column the difference of means and Welch's
    p over seeds, the Avg difference, and a verdict line per method counted from them, with
    the smallest difference the grid could detect and, where `gains` (method -> a published
    gain on these columns) has the method, whether the grid can decide the paper's claim."""
    gains = gains or {}
    out = io.StringIO()
    out.write("\n## Against %s\n\n" % baseline)
    out.write("Difference of means (method − %s) and, in brackets, the two-sided p of Welch's "
              "t-test over seeds (n/a: fewer than two seeds a side). p < 0.05 is counted as "
              "beyond seed noise, with no correction for the number of tests in this table. "
              "Avg: the difference of the Avg columns with its 95%% confidence interval from "
              "the cells' seed spread (none while a cell has fewer than two seeds); an interval "
              "that excludes 0 is a difference beyond seed noise on average. Detectable: the "
              "smallest Avg difference these seeds and this spread would show beyond seed noise "
              "with 80%% power (two-sided 5%%). Inconclusive: the interval holds both 0 and the "
              "paper's gain for the method on these tasks (published tables below), so the grid "
              "can tell neither.\n\n" % baseline)
    header = ["method"] + [_title(c, summary.metrics[c]) for c in summary.columns] + ["Avg"]
    out.write("| " + " | ".join(header) + " |\n")
    out.write("|" + "---|" * len(header) + "\n")
    verdicts = []
    for method in (m for m in summary.methods if m != baseline):
        row, higher, better, worse, compared = [method], 0, 0, 0, 0
        for column in summary.columns:
            base, cell = (summary.cells.get((column, m)) for m in (baseline, method))
            if not (base and cell):
                row.append("—")
                continue
            diff = cell["mean"] - base["mean"]
            p = welch_p(cell["values"], base["values"])
            compared += 1
            higher += diff > 0
            better += p is not None and p < 0.05 and diff > 0
            worse += p is not None and p < 0.05 and diff < 0
            row.append("%+.2f (%s)" % (diff, p_text(p)))
        avg, base_avg = summary.avg[method]["mean"], summary.avg[baseline]["mean"]
        avg_diff = None if avg is None or base_avg is None else avg - base_avg
        interval = None if avg_diff is None else avg_difference_interval(summary, method,
                                                                         baseline)
        avg_text = "—" if avg_diff is None else "%+.2f" % avg_diff
        if interval:
            avg_text += " [%+.2f, %+.2f]" % interval
        row.append(avg_text)
        out.write("| " + " | ".join(row) + " |\n")
        if compared:
            decides = ""
            if avg_diff is None:
                on_average = "not comparable (missing cells)"
            elif interval is None:
                on_average = "%s, no interval (a cell has one seed)" % avg_text
            else:
                on_average = "%s: %s on average" % (
                    avg_text, "higher beyond seed noise" if interval[0] > 0 else
                    "lower beyond seed noise" if interval[1] < 0 else "within seed noise")
                decides = " Detectable: %.2f." % detectable_difference(summary, method,
                                                                       baseline)
                if method in gains:
                    gain = gains[method]
                    holds = interval[0] <= 0 <= interval[1] and interval[0] <= gain <= interval[1]
                    decides += " The paper's gain on these tasks: %+.2f%s." % (
                        gain, "; **inconclusive** (the interval holds 0 and it)" if holds else "")
            verdicts.append("- %s: higher mean than %s on %d of %d tasks; beyond seed noise "
                            "higher on %d, lower on %d; Avg %s.%s\n" % (
                                method, baseline, higher, compared, better, worse, on_average,
                                decides))
    out.write("\n")
    out.writelines(verdicts)
    return out.getvalue()


def render_csv(runs):
    """One row per run and column: every metric of the selected validation."""
    metrics = sorted({m for r in runs for cell in r.cells.values() for m in cell})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task", "method", "seed", "run_dir"] + metrics)
    for run in sorted(runs, key=lambda r: (_column_key(r.task), r.method, r.seed)):
        for column, cell in sorted(run.cells.items(), key=lambda kv: _column_key(kv[0])):
            writer.writerow([column, run.method, run.seed, run.path] + [
                "%.4f" % cell[m] if m in cell else "" for m in metrics])
    return out.getvalue()


def summary_json(summary):
    out = {}
    for (column, method), cell in summary.cells.items():
        out.setdefault(column, {})[method] = {"mean": cell["mean"], "std": cell["std"],
                                              "seeds": len(cell["values"]),
                                              "metric": cell["metric"]}
    out["avg"] = {m: {"mean": a["mean"], "tasks": a["tasks"]} for m, a in summary.avg.items()}
    return out


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_curves(runs, summary, prefix):
    """One PNG per task: the paper metric against total updates, mean over seeds."""
    plt = _pyplot()

    paths = []
    for task in sorted({r.task for r in runs}, key=_column_key):
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
        ax.set_title("%s: dev metric during training (mean over seeds)" % DISPLAY.get(task, task))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = "%s-curves-%s.png" % (prefix, task)
        _save(fig, path)
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
    plt = _pyplot()

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
    ax.set_xticklabels([_title(c, summary.metrics[c]) for c in columns], fontsize=8)
    ax.set_ylabel("dev metric (%)")
    ax.set_title("mean ± std over seeds")
    ax.legend(fontsize=8)
    path = prefix + "-bars.png"
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path):
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def report(roots, out, select="best", published_files=None, plots=True, how="", baseline=None):
    """Write the report files; returns their paths. `baseline`: the method every other one is
    compared with (default: ft, when there are runs of it)."""
    if not out.endswith(".md"):
        raise ReportError("--out %s: expected a .md file name (the CSV, JSON and PNG files go "
                          "next to it)" % out)
    runs, unfinished = collect(roots, select)
    if not runs:
        raise ReportError("no finished runs under %s (looked for run.json with a finished last "
                          "stage)%s" % (", ".join(roots), "; unfinished: %d" % len(unfinished)
                                        if unfinished else ""))
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
    write_file(prefix + ".json", json.dumps(summary_json(summary), indent=2) + "\n")
    write_file(out, render_markdown(summary, published, unfinished, how, baseline or "ft"))
    return [out, prefix + ".csv", prefix + ".json"] + written
