"""EH-FT as designed: experiments on stage 1, then the converged grid's two-stage rows again
with stage 1 budgeted on its own (`ehft train`'s default: until its dev metric stops
improving, its best head handed over). Runs in slices (`--hours`), each command going on
where the last one stopped, with the converged grid's cell machinery (converged_grid.py).

    .venv/bin/python -m benchmarks.stage1_grid probe [--tasks ...] [--hours H] [--jobs 2]
    .venv/bin/python -m benchmarks.stage1_grid grid [--tasks ...] [--methods ...] [--hours H]
    .venv/bin/python -m benchmarks.stage1_grid head-init [--hours H] [--jobs 2]
    .venv/bin/python -m benchmarks.stage1_grid report
    .venv/bin/python -m benchmarks.stage1_grid keep [--tasks rte]
    .venv/bin/python -m benchmarks.stage1_grid diagnostics [--tasks cb rte]

Declared before anything was run (the converted all-MiniLM-L6-v2, batch 16, the data and
seeds of the converged grid):
- `probe` (experiment a; benchmarks/stage1/probe/): single-stage BitFit and the linear probe
  (LP, the head alone) to convergence on CB, COPA and RTE, learning rates 5e-4 and 2e-3,
  seeds 1 and 2: at most 40 epochs on CB and COPA, 20 on RTE (an RTE pass is 10 of CB's),
  one validation a pass, fairseq's --patience 10 ending a run whose dev metric has not
  improved for 10 validations. Question: does BitFit's best dev beat LP's on this backbone,
  at either rate? `probe.md` compares the best rate of each.
- `grid` (experiment b and the new grid; benchmarks/accuracy-stage1/): EH-FT(BitFit) and
  LP-FT with `ehft train`'s default stage 1 (patience 5 validations, at most 40 epochs), the
  stage-1 rate of each the probe's rate with the higher mean best dev for BitFit and LP
  respectively on that task; EH-FT(LoRA) with the EH-FT authors' r=8, α=16 on q, k, v, out
  at their 5e-4; Mixout p=0.7 on every Linear, the head too, dropout off; Child-Tuning_D
  p=0.1 with the Fisher gradients clipped at 1.0 per tensor. Stage 2 (and the one-stage
  methods) exactly as the converged grid's FT: its epochs (CB, COPA 20; RTE 10), its rate
  per task, about 20 validations (whose --validate-interval-updates the stage-1 plateau also
  validates at). Seeds: EH-FT(BitFit) and LP-FT 8 on CB and COPA, 4 on RTE; the others 4.
  FT is the converged grid's (same settings, unchanged). The diagnosed cells (CB and RTE,
  EH-FT(BitFit) and LP-FT, seeds 1-3) log their drift and keep what `ehft analyze` reads, in
  .cache/stage1-kept; `diagnostics` analyses them with the converged grid's FT cells of the
  same seeds (kept by `converged_grid.py rekeep --records accuracy-stage1/retrained`).
- `head-init` (experiment c; benchmarks/stage1/head-init/): FT and EH-FT(BitFit) on CB, seeds
  1-4, as in the grid but with the head drawn from N(0, 0.005) (--head-init-std, the EH-FT
  authors' initialisation); against the default initialisation of the same seeds (the
  converged grid's FT, the new grid's EH-FT(BitFit)).

A diagnosed cell's checkpoints live in .cache, which a new checkout lacks; `keep` measures the
feature drift and stage-1 heads of those there (`ehft analyze` records them in the run
directory) and copies the cells without checkpoints or heads to accuracy-stage1/kept/
(committed), from which `diagnostics` analyses cells trained in different checkouts.

Longer than ~300 lines because its three experiments share the probe's rates, which the
grid and head-init read; their declaration above is one text.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks import accuracy_grid as grid
from benchmarks import converged_grid as converged

from ehft_plugin.atomic import write_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = grid.ROOT
PROBE = os.path.join(HERE, "stage1", "probe")
HEAD_INIT = os.path.join(HERE, "stage1", "head-init")
OUT = os.environ.get("EHFT_STAGE1_OUT", os.path.join(HERE, "accuracy-stage1"))
KEPT = os.path.join(ROOT, ".cache", "stage1-kept")
SMALL = os.path.join(OUT, "kept")  # the kept cells without their checkpoints, committed
TASKS = ("cb", "copa", "rte")

PROBE_METHODS = ("bitfit", "lp")
PROBE_LRS = (5e-4, 2e-3)
PROBE_SEEDS = (1, 2)
PROBE_EPOCHS = {"cb": 40, "copa": 40, "rte": 20}
PROBE_PATIENCE = 10

LORA = "ehft-lora(r=8,alpha=16,targets=q+k+v+out)"
MIXOUT = "mixout(p=0.7)"
CHILD = "child-tuning-d(p=0.1,fisher_clip=1.0)"
SEEDS = {"ehft-bitfit": {"cb": 8, "copa": 8, "rte": 4}, "lp-ft": {"cb": 8, "copa": 8, "rte": 4},
         LORA: 4, MIXOUT: 4, CHILD: 4}
# the probe's method whose best rate a two-stage method's stage 1 takes
STAGE1_FROM = {"ehft-bitfit": "bitfit", "lp-ft": "lp"}
DIAGNOSED = {"tasks": ("cb", "rte"), "methods": ("ft", "lp-ft", "ehft-bitfit"), "seeds": 3}
HEAD_INIT_STD = 0.005
HEAD_INIT_SEEDS = 4


def this_command():
    return " ".join(["python", "-m", "benchmarks.stage1_grid"] + sys.argv[1:])


def seeds_of(method, task):
    seeds = SEEDS[method]
    return seeds[task] if isinstance(seeds, dict) else seeds


# ---- experiment a: can BitFit beat a linear probe on this backbone? --------------------

def probe_dir(lr):
    return os.path.join(PROBE, "lr%g" % lr)


def probe_budget(task, args, lr):
    return ["--total-epochs", PROBE_EPOCHS[task]], ["--patience", PROBE_PATIENCE]


def probe_flags(task, method, lr):
    return ["--lr-stage1", lr], []


def probe(args):
    converged.record_how(PROBE, {t: {"command": this_command(), "jobs": args.jobs}
                                 for t in args.tasks})
    cells = [(t, m, s, lr) for t in args.tasks for s in PROBE_SEEDS for lr in PROBE_LRS
             for m in PROBE_METHODS]
    return converged.run_cells(cells, args, probe_dir, lambda task, lr: None,
                               budget_for=probe_budget, method_flags=probe_flags,
                               work_for=lambda work, lr: os.path.join(work, "probe",
                                                                      "lr%g" % lr))


def probe_results(tasks=TASKS):
    """{task: {method: {lr: [best dev of each seed, None where not finished]}}} of the probe
    cells of which at least one seed has finished."""
    out = {}
    for task in tasks:
        for method in PROBE_METHODS:
            for lr in PROBE_LRS:
                values = [converged._best(task, method, s, probe_dir(lr)) for s in PROBE_SEEDS]
                if any(v is not None for v in values):
                    out.setdefault(task, {}).setdefault(method, {})["%g" % lr] = values
    return out


def stage1_rates():
    """{task: {probe method: lr}}: the rate of the higher mean best dev, for the tasks whose
    probe has finished for every rate of the method."""
    rates = {}
    for task, methods in probe_results().items():
        for method, by_lr in methods.items():
            by_lr = {lr: v for lr, v in by_lr.items() if None not in v}  # every seed finished
            if len(by_lr) == len(PROBE_LRS):
                best = max(by_lr, key=lambda lr: sum(by_lr[lr]) / len(by_lr[lr]))
                rates.setdefault(task, {})[method] = float(best)
    return rates


def probe_report():
    results = probe_results()
    lines = ["# Can BitFit beat a linear probe on all-MiniLM-L6-v2?", "",
             "Single-stage BitFit and the linear probe (LP, the head alone) trained to "
             "convergence: at most %s, one validation a pass, fairseq's --patience %d. "
             "Cells: best dev metric (accuracy) of each seed %s, then their mean; updates: "
             "the mean over both rates and seeds of what the runs trained before their "
             "patience ended them. Made by `%s` from the records in probe/lr*/runs/." % (
                 ", ".join("%d epochs on %s" % (e, t.upper()) for t, e in PROBE_EPOCHS.items()),
                 PROBE_PATIENCE, list(PROBE_SEEDS),
                 "python -m benchmarks.stage1_grid report"), "",
             "| task | method | " + " | ".join("lr %g" % lr for lr in PROBE_LRS)
             + " | best rate | updates |", "|---|---|" + "---|" * len(PROBE_LRS)
             + "---|---|"]
    verdicts = []
    for task in TASKS:
        best = {}
        for method in PROBE_METHODS:
            by_lr = results.get(task, {}).get(method, {})
            cells, means = [], {}
            for lr in PROBE_LRS:
                values = by_lr.get("%g" % lr)
                if values and None not in values:
                    means[lr] = sum(values) / len(values)
                    cells.append("%s → %.2f" % (", ".join("%.2f" % v for v in values),
                                                means[lr]))
                else:  # the seeds finished so far, no mean until every seed has
                    cells.append(", ".join("—" if v is None else "%.2f" % v for v in values)
                                 if values else "—")
            if len(means) == len(PROBE_LRS):
                lr = max(means, key=means.get)
                best[method] = (lr, means[lr])
            updates = _probe_updates(task, method)
            lines.append("| %s | %s | %s | %s | %s |" % (
                task.upper(), method, " | ".join(cells),
                "%g" % best[method][0] if method in best else "—",
                "%.0f" % updates if updates else "—"))
        if len(best) == len(PROBE_METHODS):
            diff = best["bitfit"][1] - best["lp"][1]
            verdicts.append("- %s: BitFit at its best rate %s LP at its best rate by %.2f "
                            "points (%.2f against %.2f)." % (
                                task.upper(), "beats" if diff > 0 else "does not beat",
                                abs(diff), best["bitfit"][1], best["lp"][1]))
    if verdicts:
        lines += ["", "With two seeds a difference of a few points is within seed noise; the "
                  "question is whether BitFit's head is better at all:", ""] + verdicts
    return "\n".join(lines) + "\n"


def _probe_updates(task, method):
    from ehft_plugin.train.rundir import Run

    totals = []
    for lr in PROBE_LRS:
        for seed in PROBE_SEEDS:
            path = grid.record_dir(task, method, seed, argparse.Namespace(out=probe_dir(lr)))
            if os.path.isfile(os.path.join(path, "run.json")):
                run = Run.read(path)
                if run.finished():
                    totals.append(sum(run.updates))
    return sum(totals) / len(totals) if totals else None


# ---- the grid (experiment b) ----------------------------------------------------------

def grid_flags(rates):
    def flags(task, method, *key):
        if method in STAGE1_FROM:  # the default stage 1, at the probe's rate
            return ["--lr-stage1", rates[task][STAGE1_FROM[method]]], []
        if method == MIXOUT:  # the EH-FT authors' Mixout: the head mixes too, no dropout
            return [], ["--mixout-head", "--dropout", "0", "--attention-dropout", "0",
                        "--activation-dropout", "0", "--pooler-dropout", "0"]
        return [], []
    return flags


def grid_cells(args):
    most = max(seeds_of(m, t) for m in SEEDS for t in TASKS)
    return [(t, m, s) for s in range(1, most + 1) for t in args.tasks for m in SEEDS
            if s <= seeds_of(m, t) and m in args.methods]


def complete(task):
    """Whether every grid cell of `task` has finished."""
    cells = grid_cells(argparse.Namespace(tasks=[task], methods=list(SEEDS)))
    return all(grid.finished(*cell, argparse.Namespace(out=OUT)) for cell in cells)


def diagnosed(task, method, seed):
    return (task in DIAGNOSED["tasks"] and method in DIAGNOSED["methods"]
            and seed <= DIAGNOSED["seeds"])


def run_grid(args):
    ft_rates = converged.rates_for(args.tasks)
    rates = stage1_rates()
    two_stage = [m for m in args.methods if m in STAGE1_FROM]
    missing = [t for t in args.tasks for m in two_stage
               if STAGE1_FROM[m] not in rates.get(t, {})]
    if missing:
        raise SystemExit("stage1: the probe has not chosen a stage-1 rate for %s yet; run `%s "
                         "probe --tasks %s` first" % (", ".join(sorted(set(missing))),
                                                      sys.argv[0], " ".join(sorted(set(missing)))))
    converged.record_how(OUT, {t: {"command": this_command(), "jobs": args.jobs,
                                   "stage1_rates": rates.get(t), "ft_rate": ft_rates[t]}
                               for t in args.tasks})
    cells = grid_cells(args)
    todo = [c for c in cells if not grid.finished(*c, argparse.Namespace(out=OUT))]
    print("stage1: %d of %d grid cells to run" % (len(todo), len(cells)), flush=True)
    return converged.run_cells(todo, args, lambda: OUT, lambda task: ft_rates[task],
                               keep=diagnosed, method_flags=grid_flags(rates), kept=KEPT,
                               work_for=lambda work: os.path.join(work, "stage1"))


# ---- experiment c: the head's initialisation ------------------------------------------

def head_init(args):
    ft_rates = converged.rates_for(["cb"])
    rates = stage1_rates()
    if "bitfit" not in rates.get("cb", {}):
        raise SystemExit("stage1: head-init waits for the probe's BitFit rate on CB")
    converged.record_how(HEAD_INIT, {"cb": {"command": this_command(), "jobs": args.jobs,
                                            "std": HEAD_INIT_STD}})
    flags = grid_flags(rates)

    def with_std(task, method, *key):
        own, fairseq = flags(task, method)
        return own, fairseq + ["--head-init-std", HEAD_INIT_STD]
    cells = [("cb", m, s) for s in range(1, HEAD_INIT_SEEDS + 1) for m in ("ft", "ehft-bitfit")]
    return converged.run_cells(cells, args, lambda: HEAD_INIT, lambda task: ft_rates[task],
                               method_flags=with_std,
                               work_for=lambda work: os.path.join(work, "head-init"))


def head_init_report():
    """head-init.md: each method's best dev on CB with the head drawn from N(0, 0.005) against
    the default initialisation of the same seeds, once every seed of both has finished."""
    from ehft_plugin.evaluate.report.stats import mean_std, p_text, welch_p

    seeds = range(1, HEAD_INIT_SEEDS + 1)
    lines = ["# The head's initialisation: default against N(0, %g)" % HEAD_INIT_STD, "",
             "CB, seeds %d-%d, best dev accuracy of each run. Default: the converged grid's FT "
             "and the stage-1 grid's EH-FT(BitFit) (the same settings and seeds); N(0, %g): "
             "the same runs with --head-init-std %g, the EH-FT authors' initialisation "
             "(head-init/runs/). Made by `python -m benchmarks.stage1_grid report`." % (
                 seeds[0], seeds[-1], HEAD_INIT_STD, HEAD_INIT_STD), "",
             "| method | default | N(0, %g) | difference | Welch p |" % HEAD_INIT_STD,
             "|---|---|---|---|---|"]
    for method, default_out in (("ft", converged.OUT), ("ehft-bitfit", OUT)):
        default = [converged._best("cb", method, s, default_out) for s in seeds]
        small = [converged._best("cb", method, s, HEAD_INIT) for s in seeds]
        if None in default or None in small:
            lines.append("| %s | waits for %d of %d runs |  |  |  |" % (
                method, default.count(None) + small.count(None), 2 * len(seeds)))
            continue
        cells = [mean_std(v) for v in (default, small)]
        lines.append("| %s | %.2f ± %.2f | %.2f ± %.2f | %+.2f | %s |" % (
            method, *cells[0], *cells[1], cells[1][0] - cells[0][0],
            p_text(welch_p(small, default))))
    return "\n".join(lines) + "\n"


# ---- reports ---------------------------------------------------------------------------

def report(args):
    if os.path.isdir(PROBE):
        write_file(os.path.join(PROBE, "probe.md"), probe_report())
    if os.path.isdir(os.path.join(OUT, "runs")):
        # over the complete tasks, with FT's cells of the converged grid beside the new rows
        tasks = converged.reported_tasks(TASKS, OUT, complete)
        roots = ([os.path.join(OUT, "runs", t) for t in tasks]
                 + [os.path.join(converged.OUT, "runs", t, "ft") for t in tasks])
        for name, select in (("results.md", "best"), ("results-last.md", "last")):
            grid.ehft_report(*roots, "--out", os.path.join(OUT, name), "--select", select,
                             *(["--no-plots"] if select == "last" else []))
    if os.path.isdir(os.path.join(HEAD_INIT, "runs")):
        grid.ehft_report(os.path.join(HEAD_INIT, "runs"), "--out",
                         os.path.join(HEAD_INIT, "results.md"), "--no-plots")
        write_file(os.path.join(HEAD_INIT, "head-init.md"), head_init_report())
    return []


def kept_cells(task):
    """Each diagnosed cell of `task`: (its save dir kept whole in .cache: the new grid's
    EH-FT(BitFit) and LP-FT, the converged grid's FT kept by its `rekeep`; its copy without
    checkpoints under OUT/kept)."""
    for seed in range(1, DIAGNOSED["seeds"] + 1):
        for method in DIAGNOSED["methods"]:
            name = grid.work_name(task, method, seed, "length")
            yield (os.path.join(converged.KEPT if method == "ft" else KEPT, name),
                   os.path.join(SMALL, name))


def keep(args):
    """For each diagnosed cell kept whole here and not yet copied: its feature drift and head
    measured (recorded in its run directory) and the cell copied without checkpoints or head
    to OUT/kept."""
    for task in [t for t in args.tasks if t in DIAGNOSED["tasks"]]:
        for whole, small in kept_cells(task):
            if not os.path.isdir(whole) or os.path.isdir(small):
                continue
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run(grid.ehft("analyze", whole, "--out", os.path.join(tmp, "a"),
                                         "--only", "feature_drift,heads", "--examples",
                                         converged.EXAMPLES, "--device", args.device),
                               check=True, cwd=ROOT)
            partial = small + ".partial"
            shutil.rmtree(partial, ignore_errors=True)
            # checkpoints and heads (3 MB each) stay out: measured.json holds what they gave
            shutil.copytree(whole, partial, ignore=shutil.ignore_patterns(
                "*.pt", "*.safetensors", "fairseq.out", ".*.lock"))
            os.rename(partial, small)
            print("stage1: kept %s without its checkpoints" % os.path.relpath(small, ROOT),
                  flush=True)
    return []


def diagnostics(args):
    """`ehft analyze` on each task's diagnosed cells, whole (.cache) or without checkpoints
    (OUT/kept, measured by `keep`), into OUT/diagnostics/TASK."""
    for task in [t for t in args.tasks if t in DIAGNOSED["tasks"]]:
        dirs = [whole if os.path.isdir(whole) else small for whole, small in kept_cells(task)]
        missing = [d for d in dirs if not os.path.isdir(d)]
        if missing:
            print("stage1: %s diagnostics wait for %d kept cells: %s"
                  % (task, len(missing), ", ".join(missing)))
            continue
        converged.analyze(dirs, os.path.join(OUT, "diagnostics", task), args, this_command(),
                          "stage1")
    return []


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("probe", "grid", "head-init", "report", "keep",
                                         "diagnostics"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="+", default=list(SEEDS))
    parser.add_argument("--hours", type=float, default=0,
                        help="start no cell after this many hours (0: no limit)")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained side by side")
    parser.add_argument("--backbone", default=os.path.join(ROOT, ".cache", "backbones",
                                                           "all-MiniLM-L6-v2"))
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--work", default=os.path.join(ROOT, ".cache", "converged-runs"))
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1, got %d" % args.jobs)
    unknown = [m for m in args.methods if m not in SEEDS]
    if unknown:
        parser.error("--methods: unknown %s; the grid's are %s" % (unknown, list(SEEDS)))
    args.batch_order, args.updates = "length", None
    for folder in (OUT, PROBE, HEAD_INIT, converged.OUT):  # FT's cells are the converged grid's
        grid.records.ensure_unpacked(folder)
    step = {"probe": probe, "grid": run_grid, "head-init": head_init, "report": report,
            "keep": keep, "diagnostics": diagnostics}[args.step]
    failed = step(args)
    if args.step != "report":
        report(args)
    if failed:
        raise SystemExit("stage1: %d cells failed:\n%s" % (len(failed), "\n".join(failed)))


if __name__ == "__main__":
    main()
