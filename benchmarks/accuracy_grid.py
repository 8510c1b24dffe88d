"""Accuracy over seeds on real data: `ehft train` for every (task, method, seed) cell of the
grid, then `ehft report`. Cells already finished are skipped, so an interrupted grid is
completed by running the same command again (as many times as it takes).

    .venv/bin/python -m benchmarks.accuracy_grid [--hours H] [--seeds 1 2 3 4] [--tasks ...]
                                                 [--device cpu|cuda] [--jobs N]
                                                 [--batch-order length|random]

Default backbone: the converted all-MiniLM-L6-v2; data: ../shared/data. Cells run seed by
seed (every task and method gets seed 1 before any gets seed 2), so a partial grid is a
balanced one. Training happens under .cache/grid-runs (checkpoints, never committed); each
finished cell leaves its small record (run.json and each stage's done.json: settings,
commands, every validation) in benchmarks/accuracy/runs/TASK/METHOD/seedK/, and the report is
made from those records only: benchmarks/accuracy/results.{md,csv,json} and
benchmarks/accuracy.json ({task: {method: {mean, std, seeds}}} plus "avg" and "cost") from the
best validation of each run (fairseq's checkpoint_best), and results-last.{md,csv,json} from
its final validation.
A cell is locked while it trains: a second grid reaching it leaves it alone and counts it as
failed (exit 1), so two grids never write the same cell.

`--batch-order random` trains with fairseq sentence_prediction's random batches instead of the
default length-grouped ones, into benchmarks/accuracy-random-batches/, and compares its cells
with the same cells of the default grid (comparison.md: difference of means and Welch's t-test
over seeds), which shows whether grouping batches by length changes dev accuracy.

Longer than ~300 lines because the other grids (converged_grid, stage1_grid) reuse its
cell runner, record keeping and report call; they stay thin by living here.
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import threading
import time

from benchmarks import records

from ehft_plugin.atomic import write_file
from ehft_plugin.errors import EhftError
from ehft_plugin.train.locks import acquire
from ehft_plugin.evaluate.report.stats import welch_p_of_cells
from ehft_plugin.train.rundir import method_slug

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# (raw directory under ../shared/data, total updates) at batch 16: about 2 epochs of RTE and
# CoLA, 1.3 of MRPC, 0.8 of STS-B, 10 of CB and COPA, what this 2-core machine finishes in
# 2-14 minutes a cell. CoLA gets 1000: at 300 every method still predicted one class (MCC 0),
# and `ehft train --method ft --total-updates 1500 -- --validate-interval-updates 250` (seed 1)
# reached MCC 4.6 at 500 updates, 28.6 at 1000 and 30.6 at 1500
TASKS = {"rte": ("glue/RTE", 300), "mrpc": ("glue/MRPC", 300), "cola": ("glue/CoLA", 1000),
         "stsb": ("glue/STS-B", 300), "cb": ("superglue/CB", 160), "copa": ("superglue/COPA", 250)}
# FT, LP-FT, the three EH-FT methods, a SPAFIT configuration (6 layers: 2 frozen, 2 BitFit,
# 2 LoRA+BitFit) and the single-stage PEFT methods, of which the report shows the best
METHODS = ["ft", "lp-ft", "ehft-bitfit", "ehft-lora", "ehft-prefix", "spafit-2-4-II",
           "bitfit", "lora", "prefix"]
BATCH, FT_LR = 16, 5e-5  # small models finetune at a higher rate than RoBERTa-large's 1e-5
KEEP = ("run.json", "done.json")


def ehft(*args):
    return [os.path.join(os.path.dirname(sys.executable), "ehft"), *map(str, args)]


def ehft_report(*args):
    """`ehft report` run from the repository with the paths under it made relative, so that
    the command a report names (its first lines) is the same on every clone."""
    args = [os.path.relpath(a, ROOT) if isinstance(a, str) and os.path.isabs(a)
            and not os.path.relpath(a, ROOT).startswith("..") else a for a in args]
    subprocess.run(ehft("report", *args), check=True, stdout=subprocess.DEVNULL, cwd=ROOT)


_PREPARING = threading.Lock()


def prepare(task, args):
    out = os.path.join(ROOT, ".cache", "grid-data", task)
    with _PREPARING:  # cells start side by side: the first writes the data, the others wait
        if not os.path.isfile(os.path.join(out, "ehft_task.json")):
            subprocess.run(ehft("prepare", task, "--raw-dir",
                                os.path.join(args.shared, TASKS[task][0]), "--out-dir", out,
                                "--backbone", args.backbone, "--force"),
                           check=True, stdout=subprocess.DEVNULL)
    return out


def record_dir(task, method, seed, args):
    return os.path.join(args.out, "runs", task, method_slug(method), "seed%d" % seed)


def finished(task, method, seed, args):
    path = os.path.join(record_dir(task, method, seed, args), "run.json")
    if not os.path.isfile(path):
        return False
    stages = json.load(open(path))["config"]["stages"]
    return os.path.isfile(os.path.join(os.path.dirname(path), stages[-1]["name"], "done.json"))


class CellFailed(Exception):
    pass


def work_name(task, method, seed, batch_order):
    """A cell's save dir name: cells may run at once, and a random-batch grid beside the
    default one."""
    return "%s-%s-%d-%s" % (task, method_slug(method), seed, batch_order)


def run_cell(task, method, seed, args):
    work = os.path.join(args.work, work_name(task, method, seed, args.batch_order))
    try:
        lock = acquire(work, "accuracy grid")
    except EhftError as busy:  # a second grid on the same cell would delete the first's files
        raise CellFailed("grid: %s %s seed %d: %s" % (task, method, seed, busy))
    with lock:
        if not finished(task, method, seed, args):  # by the grid that held it before
            train_cell(task, method, seed, args, work)


def budget(task, args):
    """ehft train's budget flags and extra fairseq-train arguments of a cell of `task`
    (converged_grid.py sets its own through args.budget)."""
    if getattr(args, "budget", None):
        return args.budget(task, args)
    return ["--total-updates", args.updates or TASKS[task][1]], []


def train_cell(task, method, seed, args, work):
    flags, extra = budget(task, args)
    lr = getattr(args, "ft_lr", None) or FT_LR
    # a cell kept for `ehft analyze` logs its drift from the backbone (which leaves training
    # unchanged to the bit: tests/test_analyze.py) and keeps the checkpoints the analysis reads
    keep = getattr(args, "keep", None)
    # the grids of benchmarks/accuracy and accuracy-converged gave stage 1 a tenth of the
    # total (the rule before stage 1 had a budget of its own); `method_flags(task, method)`:
    # another grid's (ehft train flags, fairseq-train arguments) for the method
    method_flags = getattr(args, "method_flags", None)
    own, own_fairseq = (method_flags(task, method) if method_flags
                        else (["--stage1-ratio", "0.1"], []))
    cmd = ehft("train", "--method", method, "--data", prepare(task, args), "--checkpoint",
               os.path.join(args.backbone, "model.pt"), "--save-dir", work, "--seeds", seed,
               *flags, *own, "--batch-size", BATCH, "--lr-stage2", lr(task) if callable(lr) else lr,
               *(["--log-drift"] if keep else []),
               "--", *(["--cpu"] if args.device == "cpu" else []), "--num-workers", "0",
               "--log-interval", "50", "--batch-order", args.batch_order, *extra, *own_fairseq)
    # cells that share a machine share its cores: one thread each keeps them from contending
    env = dict(os.environ, OMP_NUM_THREADS="1") if args.jobs > 1 else None
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise CellFailed("grid: %s %s seed %d failed:\n%s" % (task, method, seed,
                                                             result.stderr[-3000:]))
    source = os.path.join(work, task, method_slug(method), "seed%d" % seed)
    target = record_dir(task, method, seed, args)
    for folder, _, files in os.walk(source):
        for name in files:
            if name in KEEP:
                rel = os.path.relpath(os.path.join(folder, name), source)
                os.makedirs(os.path.dirname(os.path.join(target, rel)), exist_ok=True)
                shutil.copyfile(os.path.join(folder, name), os.path.join(target, rel))
    # what done.json's software record lacks: cells of one grid may train on different
    # machines, which differ in speed and rounding (accuracy-converged/rerun/)
    write_file(os.path.join(target, "machine.json"), json.dumps(
        {"cpu": cpu_model(), "cores": os.cpu_count(), "cells_side_by_side": args.jobs}) + "\n")
    if keep:
        keep_for_analysis(source, work, keep)
    else:
        shutil.rmtree(work)  # checkpoints: hundreds of MB a cell


def cpu_model():
    """The processor's name and widest vector units as Linux reports them, or None elsewhere:
    machines of one architecture differ in speed and, through the kernels their vector units
    select, in floating-point rounding."""
    try:
        with open("/proc/cpuinfo") as f:
            info = {key.strip(): value.strip()
                    for key, value in (line.split(":", 1) for line in f if ":" in line)}
    except OSError:
        return None
    name = info.get("model name")
    units = [u for u in ("avx2", "avx512f", "amx_tile") if u in info.get("flags", "").split()]
    return "%s (%s)" % (name, ", ".join(units)) if name else None


def keep_for_analysis(run, work, keep):
    """Moves the cell's save dir under `keep`, with what `ehft analyze` reads: every stage's
    logs and stage-1 head, the last stage's checkpoint_last.pt (feature drift); the other
    checkpoints (the best, earlier stages') are deleted, hundreds of MB each."""
    with open(os.path.join(run, "run.json")) as f:
        last = json.load(f)["config"]["stages"][-1]["name"]
    for folder, _, files in os.walk(run):
        for name in files:
            if name.endswith(".pt") and not (name == "checkpoint_last.pt" and
                                             os.path.basename(folder) == last):
                os.remove(os.path.join(folder, name))
    target = os.path.join(keep, os.path.basename(work))
    shutil.rmtree(target, ignore_errors=True)  # a kept copy of an earlier, unfinished try
    os.makedirs(keep, exist_ok=True)
    shutil.move(work, target)


def summarise(args):
    runs = os.path.join(args.out, "runs")
    if not os.path.isdir(runs):
        return
    # `roots`: only some tasks' run directories, e.g. those every method has finished
    roots = getattr(args, "roots", None) or [runs]
    ehft_report(*roots, "--out", os.path.join(args.out, "results.md"))
    # the best of a run's validations is picked on the dev set it is scored on, which flatters
    # every method on dev sets of 56 (CB) or 100 (COPA) examples; the final validation is the
    # other view, kept beside it so that a verdict can be checked against both
    ehft_report(*roots, "--out", os.path.join(args.out, "results-last.md"), "--select", "last",
                "--no-plots")
    # the report's JSON is already {task: {method: {mean, std, seeds, metric}}, "avg": ...}
    if args.json:
        with open(os.path.join(args.out, "results.json")) as f:
            write_file(args.json, f.read())
    if args.batch_order == "random":
        if os.path.isfile(args.compare_with):
            compare(args)
        else:
            print("grid: no comparison, %s does not exist (run the default grid first)"
                  % args.compare_with)


def compare(args):
    """Dev metric of random against length-grouped batches, cell by cell."""
    with open(os.path.join(args.out, "results.json")) as f:
        random_batches = json.load(f)
    with open(args.compare_with) as f:
        length_grouped = json.load(f)
    rows = ["| task | method | length-grouped | random | difference | Welch p |",
            "|---|---|---|---|---|---|"]
    for task in sorted(set(random_batches) - {"avg", "cost"}):
        for method, r in sorted(random_batches[task].items()):
            g = length_grouped.get(task, {}).get(method)
            if not g:
                continue
            p = welch_p_of_cells(g, r)  # None: a t-test needs two seeds a side
            p = "n/a" if p is None else "%.2f" % p
            rows.append("| %s | %s | %s | %s | %+.2f | %s |" % (
                task, method, _mean_std(g), _mean_std(r), r["mean"] - g["mean"], p))
    command = " ".join(["python", "-m", "benchmarks.accuracy_grid"] + sys.argv[1:])
    write_file(os.path.join(args.out, "comparison.md"), (
        "# Dev metric: length-grouped against random batches\n\n"
        "Made by `%s`; the length-grouped cells are from %s. Mean ± std over n seeds; a Welch "
        "p below 0.05 would mean the batch order changed the metric beyond seed noise.\n\n%s\n"
        % (command, os.path.relpath(args.compare_with, ROOT), "\n".join(rows))))


def _mean_std(cell):
    std = "-" if cell["std"] is None else "%.2f" % cell["std"]
    return "%.2f ± %s (n=%d)" % (cell["mean"], std, cell["seeds"])


def cells(args):
    return [(task, method, seed) for seed in args.seeds for task in args.tasks
            for method in args.methods]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--hours", type=float, default=0,
                        help="start no new cell after this many hours (0: run them all)")
    parser.add_argument("--backbone", default=os.path.join(ROOT, ".cache", "backbones",
                                                           "all-MiniLM-L6-v2"))
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--updates", type=int, help="total updates of every cell (default: "
                                                     "the per-task budget above)")
    parser.add_argument("--batch-order", choices=["length", "random"], default="length",
                        help="glue_ehft's --batch-order for every cell (random: the comparison "
                             "grid, by default in benchmarks/accuracy-random-batches)")
    parser.add_argument("--out", help="records and report (default: benchmarks/accuracy, or "
                                      "benchmarks/accuracy-random-batches with random batches)")
    parser.add_argument("--json", help="copy of the report's JSON (default: "
                                       "benchmarks/accuracy.json; none with random batches)")
    parser.add_argument("--compare-with", default=os.path.join(HERE, "accuracy", "results.json"),
                        help="the length-grouped report that random batches are compared with")
    parser.add_argument("--device", choices=["cpu", "cuda"],
                        help="where cells train (default: cuda when torch sees a GPU)")
    parser.add_argument("--report", action="store_true",
                        help="train nothing: only make the report from the records in --out")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells trained at once (on a GPU several small cells fit side by side)")
    parser.add_argument("--work", default=os.path.join(ROOT, ".cache", "grid-runs"),
                        help="where cells train (checkpoints; emptied cell by cell)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1, got %d" % args.jobs)
    default_order = args.batch_order == "length"
    if args.out is None:
        args.out = os.path.join(HERE, "accuracy" if default_order else "accuracy-random-batches")
    if args.json is None and default_order:
        args.json = os.path.join(HERE, "accuracy.json")
    records.ensure_unpacked(args.out)
    if args.report:
        summarise(args)
        return
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.time()
    todo = [c for c in cells(args) if not finished(*c, args)]
    print("grid: %d of %d cells to run on %s, %d at a time (batch %d, %s batches, full-finetuning "
          "lr %g, updates %s)" % (len(todo), len(cells(args)), args.device, args.jobs, BATCH,
                                  args.batch_order, FT_LR,
                                  {t: args.updates or TASKS[t][1] for t in args.tasks}),
          flush=True)
    for task in sorted({c[0] for c in todo}):
        prepare(task, args)  # once, before cells of the task may start side by side

    def timed(cell):
        if args.hours and time.time() - start > args.hours * 3600:
            return cell, None
        began = time.time()
        try:
            run_cell(*cell, args)
        except CellFailed as failure:
            return cell, failure
        return cell, time.time() - began

    done, skipped, failed = 0, 0, []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for (task, method, seed), outcome in pool.map(timed, todo):
            if outcome is None:
                skipped += 1
            elif isinstance(outcome, CellFailed):
                failed.append(str(outcome))
                print(outcome, flush=True)  # the other cells go on; the grid exits 1 at the end
            else:
                done += 1
                print("  %d/%d %s %s seed %d: %.0f s" % (done, len(todo), task, method, seed,
                                                        outcome), flush=True)
    if skipped:
        print("grid: --hours %g reached, %d cells not started; run again to go on"
              % (args.hours, skipped))
    summarise(args)
    print("grid: report in %s/results.md, %s" % (args.out, args.json))
    if failed:
        raise SystemExit("grid: %d cells failed (above); their records were not kept" % len(failed))


if __name__ == "__main__":
    main()
