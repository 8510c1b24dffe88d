"""`ehft report`: mean ± std over seeds per method × task from `ehft train` run directories."""

import json
import shlex
import sys


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="tables (Markdown, CSV, JSON) and plots of finished runs",
        description="Reads SAVE_DIR/TASK/METHOD/seedK run directories written by `ehft train` "
                    "and writes OUT (Markdown), OUT.csv, OUT.json, OUT-curves-TASK.png and "
                    "OUT-bars.png. Published reference results are printed in tables of their "
                    "own, never mixed with measured rows.")
    p.add_argument("runs", nargs="+", help="directories holding run directories (--save-dir)")
    p.add_argument("--out", required=True, help="the Markdown file to write, e.g. results.md")
    p.add_argument("--select", choices=("best", "last"), default="best",
                   help="which validation of a run counts: best = the best headline metric "
                        "(fairseq's checkpoint_best, default), last = the final one")
    p.add_argument("--published-file", action="append", default=[],
                   help="more published reference results (JSON, format ehft-published/1); "
                        "repeatable")
    p.add_argument("--no-published", action="store_true",
                   help="leave out the bundled published reference tables")
    p.add_argument("--no-plots", action="store_true", help="write no PNG files")
    p.add_argument("--baseline", metavar="METHOD",
                   help="compare every other method with this one: difference of means and "
                        "Welch's t-test over seeds per task, and a verdict per method (default: "
                        "ft, when the runs hold it)")
    return p


def run(args):
    from ..report import PUBLISHED, report

    published = ([] if args.no_published else [PUBLISHED]) + args.published_file
    how = "`ehft %s`, select=%s" % (" ".join(shlex.quote(a) for a in sys.argv[1:]) or "report",
                                    args.select)
    for path in report(args.runs, args.out, args.select, published, not args.no_plots, how,
                       args.baseline):
        print(json.dumps({"wrote": path}))
