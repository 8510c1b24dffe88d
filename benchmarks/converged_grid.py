"""The second accuracy grid: budgets where full finetuning has converged, enough seeds to
decide, and the EH-FT paper's other baselines. It runs in slices (`--hours`), each command
going on where the last one stopped, as the first grid does (accuracy_grid.py, whose cell
machinery it uses).

    .venv/bin/python -m benchmarks.converged_grid sweep [--hours H] [--jobs 2]
    .venv/bin/python -m benchmarks.converged_grid grid [--hours H] [--jobs 2]
    .venv/bin/python -m benchmarks.converged_grid budget --tasks rte --epochs 20 [--jobs 2]
    .venv/bin/python -m benchmarks.converged_grid report
    .venv/bin/python -m benchmarks.converged_grid rekeep [--tasks rte] [--jobs 2]
    .venv/bin/python -m benchmarks.converged_grid diagnostics [--tasks cb rte]

Declared before anything was run:
- tasks and budgets: CB and COPA 20 epochs, RTE 10 epochs (batch 16, the converted
  all-MiniLM-L6-v2), about 20 validations a run; `report` shows FT's dev curve over epochs
  and the slope of its last validations, to check that the budget is past its rise;
- FT's learning rate per task from a sweep over 1e-5, 2e-5 and 5e-5 on seeds 1 and 2 (`sweep`,
  kept in benchmarks/accuracy-converged/sweep/): the rate with the highest mean best-dev
  metric; every method's full-finetuning stage (FT, EH-FT's and LP-FT's stage 2, Mixout,
  Child-Tuning_D) uses it, stage 1 keeps the method table's rate;
- methods and seeds: FT and EH-FT(BitFit) 8 seeds, EH-FT(LoRA), LP-FT, Mixout (p=0.9) and
  Child-Tuning_D (p_D=0.3) 4 seeds; one p each (the paper searched three), fixed here to keep
  the grid within about 12 hours of this machine.
`grid` refuses to start before the sweep has chosen every task's rate. `budget` trains FT on
the sweep's seeds at the chosen rate and a longer budget (whether FT still rises at the end of
its declared epochs), into benchmarks/accuracy-converged/budget/epochsN/: a last slope above 0
may be a rise that goes on or the learning rate's decay to 0, which only a longer run tells
apart. The report: benchmarks/accuracy-converged/results.md (and -last), convergence.md,
accuracy.json, cost.md, code.md. The paper's diagnostics: FT, LP-FT and EH-FT(BitFit) on CB and
RTE, seeds 1-3, train with --log-drift and keep their save dirs in .cache/converged-kept;
`diagnostics` runs `ehft analyze` on them into
benchmarks/accuracy-converged/diagnostics/TASK/. A new checkout has no .cache: `rekeep`
retrains the finished diagnosed cells whose save dir is gone, with the grid's settings, into
.cache/converged-kept, their records into accuracy-converged/retrained/ (the grid's records stay;
a retrained cell matches its grid cell to the bit only on the same kind of machine, see
rerun/).

Longer than ~300 lines because it holds the grid's whole declared design (sweep, budget
check, grid, re-keeping and diagnostics share its constants and cell runner); the figures
it writes are converged_report's.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

from benchmarks import accuracy_grid as grid
from benchmarks import converged_report
from benchmarks import speed

from ehft_plugin.atomic import write_file
from ehft_plugin.data.binarize import load_metadata
from ehft_plugin.train.recipes import epochs_to_updates

HERE = os.path.dirname(os.path.abspath(__file__))

OUT = os.environ.get("EHFT_CONVERGED_OUT", os.path.join(HERE, "accuracy-converged"))
EPOCHS = {"cb": 20, "copa": 20, "rte": 10}
VALIDATIONS = 20
SEEDS = {"ft": 8, "ehft-bitfit": 8, "ehft-lora": 4, "lp-ft": 4, "mixout(p=0.9)": 4,
         "child-tuning-d(p=0.3)": 4}
SWEEP_LRS = (1e-5, 2e-5, 5e-5)
SWEEP_SEEDS = (1, 2)
# the paper's Figure 1 (feature drift) and Figures 4/5 (heads, parameter drift) come from the
# grid's own runs: these cells log their drift and keep what `ehft analyze` reads
DIAGNOSED = {"tasks": ("cb", "rte"), "methods": ("ft", "lp-ft", "ehft-bitfit"), "seeds": 3}
KEPT = os.path.join(grid.ROOT, ".cache", "converged-kept")


def diagnosed(task, method, seed):
    return (task in DIAGNOSED["tasks"] and method in DIAGNOSED["methods"]
            and seed <= DIAGNOSED["seeds"])


def budget(task, args, epochs=None):
    """--total-epochs (the task's, or `epochs`), and a validation every 1/VALIDATIONS of the
    run's updates."""
    epochs = epochs or EPOCHS[task]
    updates = epochs_to_updates(epochs, load_metadata(grid.prepare(task, args)), grid.BATCH)
    return (["--total-epochs", epochs],
            ["--validate-interval-updates", max(1, updates // VALIDATIONS)])


def sweep_dir(lr):
    return os.path.join(OUT, "sweep", "lr%g" % lr)


def chosen_rates():
    """{task: lr} of the tasks whose sweep has finished, from sweep/rates.json."""
    path = os.path.join(OUT, "sweep", "rates.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return {t: entry["chosen"] for t, entry in json.load(f).items()}


def rates_for(tasks):
    """{task: lr} chosen by the sweep; refuses a task whose sweep has not finished."""
    rates = chosen_rates()
    missing = [t for t in tasks if t not in rates]
    if missing:
        raise SystemExit("converged: no FT learning rate chosen yet for %s; run `%s sweep` "
                         "first" % (", ".join(missing), sys.argv[0]))
    return rates


def run_cells(cells, args, out_for, lr_for, keep=lambda *cell: False, epochs=None,
              work_for=lambda work, *key: os.path.join(work, *("lr%g" % k for k in key)),
              budget_for=None, method_flags=None, kept=None):
    """accuracy_grid's cells, --jobs at a time, none started after --hours; returns the
    failures. `cells`: (task, method, seed, *key), key picking the output and the rate;
    `keep(task, method, seed)`: whether the cell is kept for `ehft analyze` (under KEPT);
    `epochs`: a budget other than the task's declared one; `budget_for(task, args, *key)`:
    another budget altogether; `method_flags(task, method, *key)`: (ehft train flags,
    fairseq-train arguments) of the method's cells (default: stage 1 a tenth of the total);
    `kept`: where kept cells go (default KEPT)."""
    import concurrent.futures

    start = time.time()

    def one(cell):
        task, method, seed, *key = cell
        cell_args = argparse.Namespace(**dict(vars(args), out=out_for(*key),
                                              budget=(lambda t, a: budget_for(t, a, *key))
                                              if budget_for else
                                              (lambda t, a: budget(t, a, epochs)),
                                              method_flags=(lambda t, m: method_flags(t, m, *key))
                                              if method_flags else None,
                                              ft_lr=lr_for(task, *key), batch_order="length",
                                              keep=(kept or KEPT) if keep(task, method, seed)
                                              else None,
                                              # the sweep's rates train side by side
                                              work=work_for(args.work, *key)))
        if grid.finished(task, method, seed, cell_args):
            return None
        if args.hours and time.time() - start > args.hours * 3600:
            return "skipped"
        began = time.time()
        try:
            grid.run_cell(task, method, seed, cell_args)
        except grid.CellFailed as failure:
            print(failure, flush=True)
            return failure
        print("  %s %s seed %d%s: %.0f s" % (
            task, method, seed, " (%s)" % os.path.basename(work_for("", *key)) if key else "",
            time.time() - began), flush=True)
        return None

    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        outcomes = list(pool.map(one, cells))
    if "skipped" in outcomes:
        print("converged: --hours %g reached, %d cells not started; run again to go on"
              % (args.hours, outcomes.count("skipped")))
    return [str(o) for o in outcomes if isinstance(o, grid.CellFailed)]


def this_command():
    return " ".join(["python", "-m", "benchmarks.converged_grid"] + sys.argv[1:])


def record_how(folder, entries):
    """Writes FOLDER/how.json, {task: how it was run}, keeping the tasks run by earlier
    commands."""
    path = os.path.join(folder, "how.json")
    how = {}
    if os.path.isfile(path):
        with open(path) as f:
            how = json.load(f)
    os.makedirs(folder, exist_ok=True)
    write_file(path, json.dumps(dict(how, **entries), indent=1) + "\n")


def sweep(args):
    record_how(os.path.join(OUT, "sweep"), {t: {"command": this_command(), "jobs": args.jobs}
                                            for t in args.tasks})
    cells = [(t, "ft", s, lr) for s in SWEEP_SEEDS for t in args.tasks for lr in SWEEP_LRS]
    failed = run_cells(cells, args, sweep_dir, lambda task, lr: lr)
    path = os.path.join(OUT, "sweep", "rates.json")
    rates = json.load(open(path)) if os.path.isfile(path) else {}  # other tasks' sweeps stay
    for task in args.tasks:
        means = {}
        for lr in SWEEP_LRS:
            values = [_best(task, "ft", s, sweep_dir(lr)) for s in SWEEP_SEEDS]
            if None not in values:
                means["%g" % lr] = sum(values) / len(values)
        if len(means) == len(SWEEP_LRS):
            best = max(means, key=means.get)
            rates[task] = {"chosen": float(best), "mean_best_dev": means,
                           "seeds": list(SWEEP_SEEDS), "epochs": EPOCHS[task]}
    write_file(path, json.dumps(rates, indent=1) + "\n")
    print("converged: FT learning rates chosen so far: %s" % json.dumps(
        {t: r["chosen"] for t, r in rates.items()}))
    return failed


def budget_dir(epochs):
    return os.path.join(OUT, "budget", "epochs%d" % epochs)


def budgets_tried():
    """{epochs: folder} of the longer budgets with a finished cell."""
    root = os.path.join(OUT, "budget")
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    return {int(n[len("epochs"):]): os.path.join(root, n) for n in names
            if n.startswith("epochs") and os.path.isdir(os.path.join(root, n, "runs"))}


def check_budget(args):
    """FT on the sweep's seeds at the chosen rate and a longer budget (--epochs), into
    OUT/budget/epochsN: whether FT still gains past the declared budget, where the slope of
    its last validations cannot tell a rise that goes on from the learning rate's decay."""
    rates = rates_for(args.tasks)
    if not args.epochs:
        raise SystemExit("converged: budget needs --epochs N (the longer budget to try)")
    record_how(budget_dir(args.epochs), {t: this_command() for t in args.tasks})
    cells = [(t, "ft", s, args.epochs) for s in SWEEP_SEEDS for t in args.tasks]
    return run_cells(cells, args, budget_dir, lambda task, epochs: rates[task],
                     epochs=args.epochs,
                     work_for=lambda work, epochs: os.path.join(work, "epochs%d" % epochs))


def _best(task, method, seed, out):
    """The best dev metric of a finished record, in the task's paper metric, or None."""
    from ehft_plugin.evaluate.report import read_run

    path = os.path.join(out, "runs", task, grid.method_slug(method), "seed%d" % seed)
    run = read_run(path) if os.path.isfile(os.path.join(path, "run.json")) else None
    if run is None:
        return None
    from ehft_plugin.data.task_table import paper_metric

    return run.cells[task][paper_metric(task, run.cells[task])]


def grid_cells(args):
    """Seed-major, so that every method's mean grows together as slices finish; --methods
    narrows it (a task's FT seeds first, to check its budget before the other methods)."""
    most = max(SEEDS.values())
    return [(t, m, s) for s in range(1, most + 1) for t in args.tasks for m in SEEDS
            if s <= SEEDS[m] and m in args.methods]


def run_grid(args):
    rates = rates_for(args.tasks)
    cells = grid_cells(args)
    todo = [c for c in cells if not grid.finished(*c, argparse.Namespace(out=OUT))]
    print("converged: %d of %d cells to run (rates %s)" % (len(todo), len(cells), rates),
          flush=True)
    failed = run_cells(todo, args, lambda: OUT, lambda task: rates[task], keep=diagnosed)
    return failed


def diagnostics(args):
    """`ehft analyze` on each task's kept cells into OUT/diagnostics/TASK (analysis.md, JSON,
    figures, how.json); a task waits until all its diagnosed cells are kept."""
    for task in [t for t in args.tasks if t in DIAGNOSED["tasks"]]:
        cells = diagnosed_cells(task)
        dirs = [kept_dir(*cell) for cell in cells]
        missing = ["%s %s seed %d" % c for c, d in zip(cells, dirs)
                   if not grid.finished(*c, argparse.Namespace(out=OUT))
                   or not os.path.isdir(d)]
        if missing:
            print("converged: %s diagnostics wait for %d kept cells: %s"
                  % (task, len(missing), ", ".join(missing)))
            continue
        analyze(dirs, os.path.join(OUT, "diagnostics", task), args, this_command(),
                "converged", retrained=retrained(task))
    return []


EXAMPLES = 512  # training examples the feature drift and the t-SNE are measured on


def analyze(dirs, out, args, command, label, **record):
    """`ehft analyze` on kept save dirs into `out`, and out/how.json: `command` (the grid
    step that ran it), the dirs' settings and machine (diagnostics.how_record), and `record`."""
    from benchmarks.diagnostics import how_record

    # paths relative to the repository: the committed analysis names no machine's layout
    cmd = grid.ehft("analyze", *(os.path.relpath(d, grid.ROOT) for d in dirs), "--out",
                    os.path.relpath(out, grid.ROOT), "--examples", EXAMPLES,
                    "--device", args.device)
    print("%s: %s" % (label, " ".join(cmd)), flush=True)
    subprocess.run(cmd, check=True, cwd=grid.ROOT)
    write_file(os.path.join(out, "how.json"),
               json.dumps(dict(how_record(command, dirs), **record), indent=1))


def retrained_dir():
    """Where `rekeep` keeps its records: outside diagnostics/, which `ehft analyze` replaces."""
    return os.path.join(OUT, "retrained")


def diagnosed_cells(task):
    return [(task, m, s) for s in range(1, DIAGNOSED["seeds"] + 1) for m in DIAGNOSED["methods"]]


def kept_dir(task, method, seed):
    return os.path.join(KEPT, grid.work_name(task, method, seed, "length"))


def rekeep(args):
    """Retrains the diagnosed cells of --tasks (and --methods) that the grid finished but whose
    kept save dir is gone (a new checkout), at the grid's rate and budget: the save dir goes
    to KEPT, the record to --records, by default OUT/retrained/ (a stale one from a lost save
    dir is replaced). Another experiment retraining these cells for its own diagnostics gives
    its own --records: OUT/retrained/ holds what this grid's diagnostics were made from."""
    records = getattr(args, "records", None) or retrained_dir()
    rates = rates_for(args.tasks)
    methods = getattr(args, "methods", None) or DIAGNOSED["methods"]
    finished = [c for t in args.tasks if t in DIAGNOSED["tasks"] for c in diagnosed_cells(t)
                if c[1] in methods and grid.finished(*c, argparse.Namespace(out=OUT))]
    cells = [c for c in finished if not os.path.isdir(kept_dir(*c))]
    for cell in cells:
        shutil.rmtree(grid.record_dir(*cell, argparse.Namespace(out=records)),
                      ignore_errors=True)
    print("converged: %d diagnosed cells to retrain for their save dirs: %s" % (
        len(cells), ", ".join("%s %s seed %d" % c for c in cells) or "none"), flush=True)
    # the key names the cells' work dir and their lines in the log: "(retrained)"
    return run_cells([(*c, "retrained") for c in cells], args, lambda _: records,
                     lambda task, _: rates[task], keep=diagnosed, work_for=os.path.join)


def retrained(task):
    """{cell: its best dev in the grid and retrained} for the diagnosed cells of `task` that
    `rekeep` retrained: the analysis reads the retrained run, the results the grid's."""
    out = {}
    for cell in diagnosed_cells(task):
        again = _best(*cell, retrained_dir())
        if again is not None:
            out["%s %s seed %d" % cell] = {"grid_best_dev": _best(*cell, OUT),
                                           "retrained_best_dev": again}
    return out


def complete(task):
    """Whether every grid cell of `task` has finished."""
    cells = grid_cells(argparse.Namespace(tasks=[task], methods=list(SEEDS)))
    return all(grid.finished(*cell, argparse.Namespace(out=OUT)) for cell in cells)


def reported_tasks(tasks, out, complete):
    """The tasks a grid's results are over: those of `tasks` that are `complete` (a task whose
    methods have not all run would leave every method's Avg and verdict out), or before any
    is, those with runs in `out`."""
    started = [t for t in tasks if os.path.isdir(os.path.join(out, "runs", t))]
    return [t for t in started if complete(t)] or started


def report(args):
    roots = [os.path.join(OUT, "runs", t) for t in reported_tasks(args.tasks, OUT, complete)]
    summary = argparse.Namespace(out=OUT, json=os.path.join(OUT, "accuracy.json"),
                                 batch_order="length", roots=roots)
    grid.summarise(summary)
    if os.path.isdir(os.path.join(OUT, "runs")):
        swept = {t: (lr, sweep_dir(lr)) for t, lr in chosen_rates().items()}
        choice = converged_report.rate_choice(OUT, list(EPOCHS), swept, SWEEP_SEEDS)
        tried = budgets_tried()
        longer = converged_report.longer_budgets(OUT, list(EPOCHS), EPOCHS, tried,
                                                 SWEEP_SEEDS)
        write_file(os.path.join(OUT, "convergence.md"),
                   converged_report.convergence(OUT, list(EPOCHS), EPOCHS)
                   + "".join("\n" + part for part in (choice, longer) if part))
        for n, folder in tried.items():  # each longer budget's FT curves
            write_file(os.path.join(folder, "convergence.md"), converged_report.convergence(
                folder, list(EPOCHS), {t: n for t in EPOCHS}))
    write_sweep_curves(list(EPOCHS))
    write_file(os.path.join(OUT, "cost.md"), cost(list(EPOCHS)))
    write_file(os.path.join(OUT, "code.md"), converged_report.code(OUT))


def write_sweep_curves(tasks):
    """sweep/lrX/convergence.md: FT's curve at each swept rate, the grid's convergence table
    over the sweep's seeds (what the rate and a task's budget were chosen from)."""
    for lr in SWEEP_LRS:
        if os.path.isdir(os.path.join(sweep_dir(lr), "runs")):
            write_file(os.path.join(sweep_dir(lr), "convergence.md"),
                       converged_report.convergence(sweep_dir(lr), tasks, EPOCHS))


def _cell_minutes(out):
    """{task: [wall minutes of each finished FT cell under `out`]} from its stages' timings."""
    minutes = {}
    runs = os.path.join(out, "runs")
    for task in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
        ft = os.path.join(runs, task, "ft")
        for seed in sorted(os.listdir(ft)) if os.path.isdir(ft) else []:
            stages = speed.stage_timings(os.path.join(ft, seed))
            if stages:
                minutes.setdefault(task, []).append(speed.stages_wall(stages) / 60)
    return minutes


def sweep_how():
    """{task: {"command", "jobs"}} of the sweeps run so far."""
    path = os.path.join(OUT, "sweep", "how.json")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def cost(tasks):
    """What a cell costs, from the FT cells finished so far (sweep and grid), and what the
    grid's cells of each task come to at that rate."""
    measured = {}
    for out in [OUT] + [sweep_dir(lr) for lr in SWEEP_LRS]:
        for task, values in _cell_minutes(out).items():
            measured.setdefault(task, []).extend(values)
    how = sweep_how()
    runs = {}  # the same command may have swept several tasks
    for task in tasks:
        if task in how:
            jobs = how[task]["jobs"]
            runs.setdefault("`%s` (%s)" % (
                how[task]["command"],
                "one cell at a time" if jobs == 1 else "%d cells side by side" % jobs),
                []).append(task)
    cells = {t: sum(SEEDS.values()) for t in tasks}
    lines = ["# What the converged grid costs", "",
             "Wall minutes of each finished FT cell (its stages' fairseq-train processes, start "
             "checkpoints and hand-overs, from done.json), measured on this machine%s. A "
             "task's grid cells at that rate, FT's cost standing in for every method (stage 1 "
             "of the two-stage methods costs less a step, Mixout a little more, Child-Tuning_D "
             "adds one pass over the training set):" % (
                 " (the sweeps: %s)" % "; ".join("%s for %s" % (run, ", ".join(ts))
                                                 for run, ts in runs.items())
                 if runs else ""), "",
             "Machine hours are the cell-hours divided by the cells trained side by side.", "",
             "| task | epochs | FT cells measured | minutes a cell | grid cells | cell-hours |",
             "|---|---|---|---|---|---|"]
    for task in tasks:
        values = measured.get(task, [])
        mean = sum(values) / len(values) if values else None
        lines.append("| %s | %d | %d | %s | %d | %s |" % (
            task, EPOCHS[task], len(values), "%.1f" % mean if mean else "—", cells[task],
            "%.1f" % (cells[task] * mean / 60) if mean else "—"))
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("sweep", "grid", "budget", "report", "rekeep",
                                             "diagnostics"))
    parser.add_argument("--tasks", nargs="+", default=list(EPOCHS), choices=EPOCHS)
    parser.add_argument("--methods", nargs="+", default=list(SEEDS), choices=SEEDS,
                        help="grid and rekeep: only these methods' cells (default: all; "
                             "the stage-1 grid's diagnostics need only ft's kept)")
    parser.add_argument("--hours", type=float, default=0,
                        help="start no new cell after this many hours (0: run them all)")
    parser.add_argument("--backbone", default=os.path.join(grid.ROOT, ".cache", "backbones",
                                                           "all-MiniLM-L6-v2"))
    parser.add_argument("--shared", default=os.path.join(grid.ROOT, "..", "shared", "data"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=0,
                        help="budget: the longer budget FT is tried at on the sweep's seeds")
    parser.add_argument("--work", default=os.path.join(grid.ROOT, ".cache", "converged-runs"))
    parser.add_argument("--records", help="rekeep: where the retrained cells' records go "
                        "(default: %s, which this grid's diagnostics read)"
                        % os.path.relpath(retrained_dir(), grid.ROOT))
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1, got %d" % args.jobs)
    if args.epochs < 0 or (args.epochs and args.step != "budget"):
        parser.error("--epochs takes a positive number of epochs, for the budget step only")
    if args.records and args.step != "rekeep":
        parser.error("--records names where rekeep's records go; it is for the rekeep step only")
    if args.records:
        args.records = os.path.abspath(args.records)
    grid.records.ensure_unpacked(OUT)
    failed = {"sweep": sweep, "grid": run_grid, "budget": check_budget,
              "report": lambda a: report(a) or [], "rekeep": rekeep,
              "diagnostics": diagnostics}[args.step](args)
    if args.step in ("sweep", "grid", "budget"):
        report(argparse.Namespace(**dict(vars(args), tasks=list(EPOCHS))))  # every task
    if failed:
        raise SystemExit("converged: %d cells failed (above)" % len(failed))


if __name__ == "__main__":
    main()
