"""The EH-FT paper's diagnostics on real data: `ehft train --log-drift` (checkpoints kept) for
FT, LP-FT, EH-FT(BitFit) and prefix-tuning on one task with the default backbone and the
accuracy grid's budget, then `ehft analyze`.

    .venv/bin/python -m benchmarks.diagnostics [--task rte] [--seeds 1] [--methods ...]
                                               [--shares 0.1 0.5 0.9] [--device cpu|cuda]
                                               [--updates N] [--examples N]

Runs go to .cache/diagnostics-runs (checkpoints: never committed); a run already finished is
kept, so an interrupted command is completed by running it again. Output:
benchmarks/diagnostics/TASK/ (analysis.json, analysis.md, one PNG per figure). --shares adds
EH-FT(BitFit) runs with those stage-1 shares (the Figure 6a ablation) besides the 0.1 default.
"""

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys

from benchmarks.accuracy_grid import BATCH, FT_LR, TASKS, cpu_model, ehft, prepare

from ehft_plugin.atomic import write_file
from ehft_plugin.train.rundir import Run

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

METHODS = ["ft", "lp-ft", "ehft-bitfit", "prefix"]


def train(method, seed, args, share=None):
    save_dir = os.path.join(args.work, "main" if share is None else "share%g" % share)
    cmd = ehft("train", "--method", method, "--data", prepare(args.task, args), "--checkpoint",
               os.path.join(args.backbone, "model.pt"), "--save-dir", save_dir, "--seeds", seed,
               "--total-updates", args.updates or TASKS[args.task][1], "--batch-size", BATCH,
               "--lr-stage2", FT_LR, "--log-drift",
               "--stage1-ratio", 0.1 if share is None else share,
               "--", *(["--cpu"] if args.device == "cpu" else []), "--num-workers", "0",
               "--log-interval", "10")
    print("diagnostics: %s seed %d%s" % (method, seed, "" if share is None
                                          else " (stage 1 share %g)" % share), flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit("diagnostics: %s seed %d failed:\n%s" % (method, seed,
                                                                 result.stderr[-3000:]))
    return save_dir


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="rte", choices=sorted(TASKS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--shares", type=float, nargs="*", default=[],
                        help="extra stage-1 shares of EH-FT(BitFit), each in (0, 1)")
    parser.add_argument("--backbone", default=os.path.join(ROOT, ".cache", "backbones",
                                                           "all-MiniLM-L6-v2"))
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--work", default=os.path.join(ROOT, ".cache", "diagnostics-runs"))
    parser.add_argument("--out", default=os.path.join(HERE, "diagnostics"))
    parser.add_argument("--updates", type=int,
                        help="total updates of every run (default: the accuracy grid's budget)")
    parser.add_argument("--examples", type=int, default=512,
                        help="training examples whose features are compared (Figure 1)")
    parser.add_argument("--grad-batches", type=int, default=4,
                        help="training batches whose backbone gradient each head is measured "
                             "on (ehft analyze --grad-batches)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    if any(not 0 < s < 1 for s in args.shares):
        parser.error("--shares: each share must be in (0, 1), got %s" % args.shares)

    save_dirs = []
    for seed in args.seeds:
        for method in args.methods:
            save_dirs.append(train(method, seed, args))
        for share in args.shares:
            if abs(share - 0.1) > 1e-9:
                save_dirs.append(train("ehft-bitfit", seed, args, share))
    out = os.path.join(args.out, args.task)
    # paths relative to the repository: the committed analysis.json names no machine's layout
    cmd = ehft("analyze", *sorted({os.path.relpath(d, ROOT) for d in save_dirs}), "--out",
               os.path.relpath(out, ROOT), "--examples", args.examples, "--grad-batches",
               args.grad_batches, "--device", args.device)
    print("diagnostics: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    how = " ".join(["python"] + [shlex.quote(a) for a in sys.argv])
    write_file(os.path.join(out, "how.json"), json.dumps(how_record(how, save_dirs), indent=1))
    print("diagnostics: made by `%s`; written to %s" % (how, out))


def how_record(how, save_dirs):
    """The command, the machine and each run's resolved settings (its run.json config): the
    runs themselves stay in .cache with their checkpoints."""
    import torch

    runs = {}
    for save_dir in sorted(set(save_dirs)):
        for folder, _, files in sorted(os.walk(save_dir)):
            if "run.json" in files:
                config = Run.read(folder).config.to_dict()
                runs[os.path.relpath(folder, ROOT)] = {
                    k: v for k, v in config.items() if k not in ("data", "checkpoint")}
    return {"command": how, "machine": "%s, %d cores" % (platform.machine(), os.cpu_count()),
            "cpu": cpu_model(), "python": platform.python_version(),
            "torch": torch.__version__, "runs": runs}


if __name__ == "__main__":
    main()
