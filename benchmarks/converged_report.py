"""The converged grid's report on itself: whether FT has stopped rising over its budget
(convergence.md) and which code trained the cells (code.md). Functions of the grid's output
directory; converged_grid.py writes them with the rest of its report."""

import glob
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cell_commits(out):
    """{(commit, plugin modified): cells} of the grid's finished cells, from the software
    record each stage's done.json keeps; a cell counts under its last stage's."""
    commits = {}
    for run in sorted(glob.glob(os.path.join(out, "runs", "*", "*", "seed*"))):
        stages = sorted(glob.glob(os.path.join(run, "*", "done.json")))
        if not stages:
            continue
        with open(stages[-1]) as f:
            software = json.load(f).get("software", {})
        key = (software.get("git_commit"), software.get("plugin_code_modified"))
        commits[key] = commits.get(key, 0) + 1
    return commits


def _git(*args):
    result = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def code(out):
    """Which commits trained the grid's cells and whether the plugin's code differs between
    them: cells trained in slices across sessions are comparable only if it does not (or
    differs only where training never goes)."""
    commits = _cell_commits(out)
    known = sorted((c for c, _ in commits if c and _git("cat-file", "-e", c + "^{commit}")
                    is not None), key=lambda c: int(_git("show", "-s", "--format=%ct", c)))
    first = known[0] if known else None
    lines = ["# The code that trained the grid", "",
             "Each cell's commit and whether `ehft_plugin/` had uncommitted changes, from the "
             "software record of its done.json; `ehft_plugin/` files changed since the earliest "
             "of these commits (`git diff --name-only`).", "",
             "| commit | cells | plugin changed uncommitted | `ehft_plugin/` files changed since "
             "%s |" % (first[:7] if first else "the first"), "|---|---|---|---|"]
    for (commit, modified), cells in sorted(
            commits.items(), key=lambda kv: (known.index(kv[0][0]) if kv[0][0] in known
                                             else len(known), str(kv[0]))):
        if commit in known:
            changed = _git("diff", "--name-only", first, commit, "--", "ehft_plugin")
            diff = ", ".join(changed.split()) if changed else "none"
        else:
            diff = "unknown (commit not in this checkout)" if commit else "unknown (no record)"
        lines.append("| %s | %d | %s | %s |" % (
            commit[:7] if commit else "—", cells,
            "—" if modified is None else "yes" if modified else "no", diff))
    return "\n".join(lines) + "\n"


def _slope(points):
    """Least-squares slope of [(x, y), ...]."""
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / max(
        1e-12, sum((x - mx) ** 2 for x, _ in points))


def _rise(ft, per_epoch, last):
    """FT's slope over its last `last` validations, in points per epoch: of the mean curve,
    and as the mean of the per-seed slopes with its 95% interval (Student's t over seeds;
    None with one seed). On a small dev set one example moves a point by 1-4 points, so a
    single curve's slope says little; the seeds' spread says how little."""
    from ehft_plugin.evaluate.report.stats import mean_interval

    return mean_interval([_slope([(u / per_epoch, v) for u, v in run.curve[-last:]])
                          for run in ft])


def _rise_verdict(interval):
    if interval is None:
        return "one seed: no interval"
    if interval[0] > 0:
        return "still rising"
    if interval[1] < 0:
        return "falling"
    return "no rise or fall detected"


def convergence(out, tasks, epochs):
    """FT's dev curve over epochs (mean over seeds) and the slope of its last validations."""
    from ehft_plugin.evaluate.report import collect

    lines = ["# Has full finetuning converged?", "",
             "FT's dev metric (best-of-run selection aside: every validation) against epochs, "
             "mean over its seeds. Slopes are least-squares slopes in points per epoch over "
             "the last five validations and over the run's second half: the mean of the "
             "per-seed slopes with its 95% interval over seeds (Student's t). A budget past "
             "FT's rise shows an interval holding 0 or below it; \"still rising\" means the "
             "whole interval is above 0.", ""]
    runs, _ = collect([os.path.join(out, "runs")])
    for task in tasks:
        ft = [r for r in runs if r.task == task and r.method == "ft"]
        if not ft:
            continue
        per_epoch = ft[0].updates[0] / epochs[task]
        points = {}
        for run in ft:
            for updates, value in run.curve:
                points.setdefault(updates, []).append(value)
        curve = [(u / per_epoch, sum(v) / len(v)) for u, v in sorted(points.items())
                 if len(v) == len(ft)]
        lines += ["## %s (%d seeds, %d epochs)" % (task, len(ft), epochs[task]), "",
                  "| slope over | mean curve | per-seed mean | 95% interval | verdict |",
                  "|---|---|---|---|---|"]
        for label, last in (("last 5 validations", 5),
                            ("second half (last %d)" % (len(curve) // 2), len(curve) // 2)):
            mean, interval = _rise(ft, per_epoch, last)
            lines.append("| %s | %+.2f | %+.2f | %s | %s |" % (
                label, _slope(curve[-last:]), mean,
                "[%+.2f, %+.2f]" % interval if interval else "—", _rise_verdict(interval)))
        lines += ["", "| epoch | " + " | ".join("%.1f" % x for x, _ in curve) + " |",
                  "|---|" + "---|" * len(curve),
                  "| dev | " + " | ".join("%.2f" % y for _, y in curve) + " |", ""]
    return "\n".join(lines)


def rate_choice(out, tasks, swept, sweep_seeds):
    """Whether the grid's FT seeds that also trained the sweep reproduce its cells at the chosen
    rate, and FT's best dev over those seeds against the others: the rate was the best of
    several on those seeds, so they alone may flatter FT. `swept`: {task: (chosen rate, its
    sweep directory)} of the tasks whose sweep has finished."""
    from ehft_plugin.evaluate.report import collect

    grid_runs, _ = collect([os.path.join(out, "runs")])
    lines = ["## FT's rate was chosen on its first seeds", "",
             "The sweep trained FT on seeds %s at each rate; the grid trains the same cells "
             "again at the chosen rate (\"identical\": every dev validation the same). The "
             "rate is the best of the sweep's on those seeds, so their mean may flatter FT; "
             "the other seeds played no part in the choice." % _seed_list(sweep_seeds), "",
             "| task | rate | seeds %s identical to the sweep's | FT best dev, seeds %s | "
             "FT best dev, other seeds |" % ((_seed_list(sweep_seeds),) * 2),
             "|---|---|---|---|---|"]
    rows = 0
    for task in tasks:
        if task not in swept:
            continue
        rate, folder = swept[task]
        if not os.path.isdir(os.path.join(folder, "runs")):
            continue  # a rate chosen elsewhere (rates.json copied without its sweep)
        runs, _ = collect([os.path.join(folder, "runs")])
        sweep_ft = {r.seed: r for r in runs if r.task == task and r.method == "ft"}
        ft = {r.seed: r for r in grid_runs if r.task == task and r.method == "ft"}
        shared = [s for s in sweep_seeds if s in ft and s in sweep_ft]
        if not shared:
            continue
        same = all(ft[s].curve == sweep_ft[s].curve for s in shared)
        chosen = [ft[s].dev_score()[1] for s in shared]
        others = [r.dev_score()[1] for s, r in sorted(ft.items()) if s not in sweep_seeds]
        lines.append("| %s | %g | %s | %.2f (%d) | %s |" % (
            task, rate,
            "identical" if same else "**differ**", sum(chosen) / len(chosen), len(chosen),
            "%.2f (%d)" % (sum(others) / len(others), len(others)) if others else "—"))
        rows += 1
    return "\n".join(lines) + "\n" if rows else ""


def longer_budgets(out, tasks, epochs, tried, seeds):
    """FT at the declared budget against FT trained longer on the same seeds and rate: a last
    slope above 0 may be a rise that goes on or the learning rate decaying to 0, and only a
    longer run tells them apart. `tried`: {epochs: folder} of the longer budgets run."""
    from ehft_plugin.evaluate.report import collect

    if not tried:
        return ""
    folders = dict(tried, declared=out)
    runs = {n: collect([os.path.join(folder, "runs")])[0] for n, folder in folders.items()}

    def ft_of(n, task):
        return {r.seed: r for r in runs[n] if r.task == task and r.method == "ft"
                and r.seed in seeds}

    lines = ["## FT trained longer", "",
             "FT on seeds %s at the chosen rate, at the declared budget (the grid's cells) and "
             "at a longer one (`converged_grid.py budget --epochs N`, its warm-up and linear "
             "decay stretched to the longer run). Best and final dev are means over the seeds, "
             "each seed's value after the mean; the slope is over the run's second half, in "
             "points per epoch, with its 95%% interval over seeds." % _seed_list(seeds), "",
             "| task | epochs | seeds | FT best dev | FT final dev | second-half slope |",
             "|---|---|---|---|---|---|"]
    rows = 0
    for task in tasks:
        longer = [(n, ft_of(n, task)) for n in sorted(tried)]
        longer = [(n, ft) for n, ft in longer if ft]
        if not longer:
            continue
        for n, ft in [(epochs[task], ft_of("declared", task))] + longer:
            if not ft:
                continue
            ft_runs = [ft[s] for s in sorted(ft)]
            best = [r.dev_score()[1] for r in ft_runs]
            final = [r.curve[-1][1] for r in ft_runs]
            per_epoch = ft_runs[0].updates[0] / n
            mean, interval = _rise(ft_runs, per_epoch, len(ft_runs[0].curve) // 2)
            lines.append("| %s | %d%s | %s | %.2f (%s) | %.2f (%s) | %+.2f %s |" % (
                task, n, " (declared)" if n == epochs[task] else "",
                ", ".join(str(s) for s in sorted(ft)),
                sum(best) / len(best), ", ".join("%.2f" % v for v in best),
                sum(final) / len(final), ", ".join("%.2f" % v for v in final), mean,
                "[%+.2f, %+.2f]" % interval if interval else "(one seed)"))
            rows += 1
    return "\n".join(lines) + "\n" if rows else ""


def _seed_list(seeds):
    """"1–2" for a run of consecutive seeds, "1, 3" otherwise."""
    seeds = sorted(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return "%d–%d" % (seeds[0], seeds[-1])
    return ", ".join(str(s) for s in seeds)
