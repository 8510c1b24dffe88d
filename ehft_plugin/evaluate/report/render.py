"""The report as text: the Markdown tables (measured, against the baseline, published), the
CSV of every cell and the JSON summary."""

import csv
import io
import os

from ...data.task_table import column_key, display_name
from ...errors import EhftError
from ...train.rundir.files import read_json
from .collect import ReportError
from .settings import DEV_SELECTION_RULE
from .stats import (avg_difference_interval, detectable_difference, p_text, paper_gains,
                    published_row, welch_p)

PUBLISHED = os.path.join(os.path.dirname(os.path.dirname(__file__)), "references",
                         "published.json")
PUBLISHED_FORMAT = "ehft-published/1"


def _fmt(cell):
    if cell is None:
        return "—"
    std = "±%.2f" % cell["std"] if cell["std"] is not None else "±—"
    return "%.2f %s (%d)" % (cell["mean"], std, len(cell["values"]))


def column_title(column, metric=None):
    base = display_name(column)
    return "%s (%s)" % (base, metric) if metric and metric != "accuracy" else base


def load_published(paths):
    tables = []
    for path in paths:
        try:
            data = read_json(path)
        except EhftError as e:
            raise ReportError(str(e)) from None
        if not isinstance(data, dict) or data.get("format") != PUBLISHED_FORMAT:
            raise ReportError("%s: not a published-results file (expected \"format\": %r)"
                              % (path, PUBLISHED_FORMAT))
        for table in data.get("tables", []):
            for key in ("name", "source", "rows"):
                if key not in table:
                    raise ReportError("%s: a table has no %r" % (path, key))
            tables.append(table)
    return tables


def render_markdown(summary, published, unfinished, how, baseline="ft", choices=None):
    out = io.StringIO()
    out.write("# Dev results\n\n")
    if choices is not None:
        out.write(DEV_SELECTION_RULE + "\n\n")
    out.write("Measured by the runs below (%s). Cells: mean ± sample std over seeds (seeds); "
              "metric per task as in the column title (accuracy unless named). Avg: mean of "
              "a method's cells, only when it has every column.\n\n" % how)
    header = ["method"] + [column_title(c, summary.metrics[c]) for c in summary.columns] + ["Avg"]
    out.write("| " + " | ".join(header) + " |\n")
    out.write("|" + "---|" * len(header) + "\n")
    for method in summary.methods:
        avg = summary.avg[method]["mean"]
        row = [method] + [_fmt(summary.cells.get((c, method))) + _chance_mark(summary, c, method)
                          for c in summary.columns]
        row.append("%.2f" % avg if avg is not None else "—")
        out.write("| " + " | ".join(row) + " |\n")
    if any(c["at_chance"] for c in summary.cost.values()):
        out.write("\n† some runs' stage 1 made no head: its best dev score was at the level of "
                  "always predicting one class, so stage 2 started from a head that learned "
                  "nothing (see Compute and stage 1).\n")
    if choices is not None:
        out.write(render_sweep(choices))
    out.write(render_best_single_stage(summary))
    out.write(render_cost(summary))
    if baseline in summary.methods and len(summary.methods) > 1:
        out.write(render_versus(summary, baseline,
                                paper_gains(published, summary.columns, baseline)))
    for table in published:
        columns = sorted({c for r in table["rows"] for c in r["values"]}, key=column_key)
        out.write("\n## Published, not measured here: %s\n\n" % table["name"])
        out.write("Source: %s. Metrics: %s.\n\n" % (table["source"], table.get("metrics", "as "
                                                                              "published")))
        header = ["published row", "method"] + [display_name(c) for c in columns] + [
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


def render_sweep(choices):
    """Every setting of every task and method, the chosen one marked."""
    out = ["", "## The sweep (selected on dev)", "",
           "| task | method | setting | seeds | mean ± std | |", "|---|---|---|---|---|---|"]
    for choice in choices:
        for row in choice.settings:
            out.append("| %s | %s | %s | %s | %.2f ±%s | %s |" % (
                display_name(choice.task), choice.method, row["setting"],
                ",".join(map(str, row["seeds"])), row["mean"],
                "%.2f" % row["std"] if row["std"] is not None else "—",
                "**selected**" if row["chosen"] else ""))
    return "\n".join(out) + "\n"


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


def _chance_mark(summary, column, method):
    cost = summary.cost.get((column, method))
    return " †" if cost and cost["at_chance"] else ""


def render_cost(summary):
    """Per task and method: runs, mean updates and wall time, and stage 1's heads."""
    out = io.StringIO()
    out.write("\n## Compute and stage 1\n\n")
    out.write("Means over runs: updates of every stage as trained (a stage 1 that stopped on "
              "its patience counts what it trained), wall time of the stages (fairseq-train, "
              "start checkpoints, masks, hand-overs). Stage 1: the dev score of the head it "
              "handed over, against the level of always predicting one class; at chance: "
              "runs whose best stage-1 score was no more than one dev example (and at least "
              "one point) above that level.\n\n")
    out.write("| task | method | runs | updates | wall (s) | stage-1 head dev | constant level "
              "| at chance |\n|---|---|---|---|---|---|---|---|\n")
    for (task, method), cost in sorted(summary.cost.items(),
                                       key=lambda kv: (column_key(kv[0][0]),
                                                       summary.methods.index(kv[0][1]))):
        heads = cost["stage1"]
        dev = level = chance = "—"
        if heads:
            dev = "%.2f" % (sum(h["dev"] for h in heads) / len(heads))
            level = "%.2f" % heads[0]["constant_level"]
            chance = "%d of %d" % (cost["at_chance"], len(heads))
        out.write("| %s | %s | %d | %.0f | %s | %s | %s | %s |\n" % (
            display_name(task), method, cost["runs"], cost["updates"],
            "—" if cost["seconds"] is None else "%.0f" % cost["seconds"], dev, level, chance))
    out.write("\n" + _total_line(summary.cost.values()) + "\n")
    return out.getvalue()


def _total_line(costs):
    """The runs and machine hours of the whole table, what a grid's compute budget counts."""
    costs = list(costs)
    runs = sum(c["runs"] for c in costs)
    if any(c["seconds"] is None for c in costs):
        return "Total: %d runs; some recorded no wall time." % runs
    hours = sum(c["seconds"] * c["runs"] for c in costs) / 3600
    old = sum(c["last_launch_only"] for c in costs)
    if not old:
        return "Total: %d runs, %.1f machine hours of wall time." % (runs, hours)
    if old == runs:
        return ("Total: %d runs, %.1f machine hours of wall time (a stage resumed over several "
                "launches counts its last launch)." % (runs, hours))
    return ("Total: %d runs, %.1f machine hours of wall time (in the %d %s recorded before "
            "launches were counted, a stage resumed over several launches counts its last "
            "launch)." % (runs, hours, old, "run" if old == 1 else "runs"))


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
    header = ["method"] + [column_title(c, summary.metrics[c]) for c in summary.columns] + ["Avg"]
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
                row_name = published_row(method, gains)
                if row_name is not None:
                    gain = gains[row_name]
                    named = "" if row_name == method else " (its %s row)" % row_name
                    decides += " The paper's gain on these tasks%s: %+.2f; %s." % (
                        named, gain, _against_gain(interval, gain))
            verdicts.append("- %s: higher mean than %s on %d of %d tasks; beyond seed noise "
                            "higher on %d, lower on %d; Avg %s.%s\n" % (
                                method, baseline, higher, compared, better, worse, on_average,
                                decides))
    out.write("\n")
    out.writelines(verdicts)
    return out.getvalue()


def _against_gain(interval, gain):
    """What the Avg interval says of the paper's gain: inconclusive when it holds both 0 and
    the gain (the grid can tell neither)."""
    if not interval[0] <= gain <= interval[1]:
        return "the interval excludes it"
    if interval[0] <= 0 <= interval[1]:
        return "**inconclusive** (the interval holds 0 and it)"
    return "the interval holds it and excludes 0"


def render_csv(runs):
    """One row per run and column: every metric of the selected validation."""
    metrics = sorted({m for r in runs for cell in r.cells.values() for m in cell})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["task", "method", "seed", "run_dir"] + metrics)
    for run in sorted(runs, key=lambda r: (column_key(r.task), r.method, r.seed)):
        for column, cell in sorted(run.cells.items(), key=lambda kv: column_key(kv[0])):
            writer.writerow([column, run.method, run.seed, run.path] + [
                "%.4f" % cell[m] if m in cell else "" for m in metrics])
    return out.getvalue()


def summary_json(summary, choices=None):
    out = {}
    for (column, method), cell in summary.cells.items():
        out.setdefault(column, {})[method] = {"mean": cell["mean"], "std": cell["std"],
                                              "seeds": len(cell["values"]),
                                              "metric": cell["metric"]}
    out["avg"] = {m: {"mean": a["mean"], "tasks": a["tasks"]} for m, a in summary.avg.items()}
    out["cost"] = {task: {method: {k: c[k] for k in ("runs", "updates", "seconds", "at_chance")}
                          for (t, method), c in summary.cost.items() if t == task}
                   for task in sorted({t for t, _ in summary.cost})}
    if choices is not None:
        out["selected_on_dev"] = {"rule": DEV_SELECTION_RULE, "sweep": [
            {"task": c.task, "method": c.method, "settings": c.settings} for c in choices]}
    return out
