"""`ehft analyze`: the EH-FT paper's diagnostics on finished runs, as PNG plus JSON."""

import json
import shlex
import sys

from ..evaluate.analyze import DIAGNOSTICS


def _only(text):
    names = [n.strip().replace("-", "_") for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DIAGNOSTICS]
    if unknown or not names:
        raise ValueError(text)
    return names


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="the paper's diagnostics on finished runs (feature and parameter drift, "
                   "heads, convergence, stage-1 share), as PNG and JSON",
        description="Reads run directories of `ehft train` (searched under each RUNS path) and "
                    "writes OUT/analysis.json, OUT/analysis.md and one PNG per figure. Feature "
                    "drift needs the runs' final checkpoints and heads their stage-1 heads "
                    "(or what it measured on them before they were deleted, kept in each "
                    "run's measured.json), parameter drift runs trained with --log-drift; a "
                    "diagnostic with nothing to work on is left out and says why.")
    p.add_argument("runs", nargs="+", metavar="RUNS", help="save directories or run directories")
    p.add_argument("--out", required=True, help="output directory (replaced when complete)")
    p.add_argument("--only", type=_only, default=list(DIAGNOSTICS), metavar="NAMES",
                   help="comma-separated subset of: %s (default: all)" % ", ".join(DIAGNOSTICS))
    p.add_argument("--examples", type=_positive, default=512,
                   help="examples (first in file order) for features and t-SNE (default 512)")
    p.add_argument("--grad-batches", type=_positive, default=4,
                   help="training batches the initial gradient norm is averaged over (default 4)")
    p.add_argument("--batch-size", type=_positive, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    return p


def _positive(text):
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive.__name__ = "integer >= 1"
_only.__name__ = "list of diagnostics"


def run(args):
    from ..evaluate.analyze import analyze, find_runs

    results = analyze(find_runs(args.runs), args.out, only=args.only, examples=args.examples,
                      batch_size=args.batch_size, grad_batches=args.grad_batches,
                      device=args.device, how=" ".join(["ehft"] + [shlex.quote(a)
                                                                  for a in sys.argv[1:]]))
    print(json.dumps({"out": args.out, "figures": results["figures"],
                      "skipped": results.get("skipped", {})}))
