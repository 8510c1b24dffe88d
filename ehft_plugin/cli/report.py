"""`ehft report`: mean ± std over seeds per method × task from `ehft train` run directories."""

import json
import shlex
import sys

from ..errors import EhftError


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="tables (Markdown, CSV, JSON) and plots of finished runs",
        description="Reads SAVE_DIR/TASK/METHOD/seedK run directories written by `ehft train` "
                    "and writes OUT (Markdown), OUT.csv, OUT.json, OUT-curves-TASK.png and "
                    "OUT-bars.png. Published reference results are printed in tables of their "
                    "own, never mixed with measured rows.")
    p.add_argument("runs", nargs="+", help="directories holding run directories (--save-dir)")
    p.add_argument("--out", required=True, help="the Markdown file to write, e.g. results.md")
    p.add_argument("--select", choices=("dev", "best", "last"),
                   help="dev: of the runs of one method that differ in a setting (a sweep of "
                        "`ehft train`), report per task the setting with the best mean dev "
                        "score over seeds, and list the sweep (without it such runs are "
                        "refused, not pooled); best, last: the earlier spelling of "
                        "--validation")
    p.add_argument("--validation", choices=("best", "last"),
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
    from ..evaluate.report import PUBLISHED, report

    validation = args.validation
    if args.select in ("best", "last"):
        if validation not in (None, args.select):
            raise EhftError("--select %s and --validation %s: --select best|last is the "
                            "earlier spelling of --validation; give one"
                            % (args.select, validation))
        validation = args.select
    validation = validation or "best"
    published = ([] if args.no_published else [PUBLISHED]) + args.published_file
    how = "`ehft %s`, select=%s" % (" ".join(shlex.quote(a) for a in sys.argv[1:]) or "report",
                                    validation)
    for path in report(args.runs, args.out, validation, published, not args.no_plots, how,
                       args.baseline, on_dev=args.select == "dev"):
        print(json.dumps({"wrote": path}))
