"""`ehft submit`: a GLUE or SuperGLUE leaderboard zip from a runs folder."""

import json

from . import numbers


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="a GLUE/SuperGLUE leaderboard bundle (zip) from finished runs",
        description="Predicts every leaderboard file's official test split with the run chosen "
                    "for its task (the method's runs, one setting as `ehft report` chooses it, "
                    "the seed with the best dev score) and zips the files under the "
                    "leaderboard's names and formats, with a README.txt saying which run made "
                    "each. A task without runs is refused unless --fill-missing majority.")
    p.add_argument("runs", nargs="+", help="directories holding run directories (--save-dir)")
    p.add_argument("--benchmark", required=True, choices=("glue", "superglue"))
    p.add_argument("--raw-root", required=True,
                   help="folder holding glue/TASK/ and superglue/TASK/ with the official test "
                        "files (the layout of ../shared/data)")
    p.add_argument("--out", required=True, help="the zip to write, e.g. glue-submission.zip")
    p.add_argument("--method", help="the method to submit when the runs hold several")
    p.add_argument("--select", choices=("dev",),
                   help="dev: of runs of the method that differ in a setting, the setting with "
                        "the best mean dev score (as `ehft report --select dev`)")
    p.add_argument("--fill-missing", choices=("majority",),
                   help="fill a file without runs with its task's train majority class (said in "
                        "the output and the bundle's README)")
    p.add_argument("--only", nargs="+", metavar="FILE",
                   help="only these leaderboard files (e.g. RTE MRPC STS-B); the README lists "
                        "the others as not in the bundle")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    return p


def run(args):
    numbers.check(args, {"batch_size": numbers.POSITIVE_INT})
    from ..interop.submit import bundle

    summary = bundle(args.runs, args.benchmark, args.raw_root, args.out, method=args.method,
                     on_dev=args.select == "dev", fill=args.fill_missing, only=args.only,
                     device=args.device, batch_size=args.batch_size)
    for name, how in summary["files"].items():
        print(how if how.startswith(name) else "%s: %s" % (name, how))
    if summary["filled"]:
        print("filled with the train majority class (no run): %s" % ", ".join(summary["filled"]))
    if summary["not_in_bundle"]:
        print("not in the bundle: %s" % ", ".join(summary["not_in_bundle"]))
    print(json.dumps({"wrote": summary["out"]}))
