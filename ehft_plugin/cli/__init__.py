"""The `ehft` command: each subcommand is an `add_parser` and a `run` function."""

DESCRIPTION = ("Efficient Head Finetuning for fairseq RoBERTa: prepare GLUE/SuperGLUE data for "
               "--task glue_ehft, train EH-FT and the other methods, report, predict, export.")

import argparse
import importlib
import logging
import os
import sys

from ..errors import DEBUG_VARIABLE, EhftError
from . import (analyze, child_mask, convert, export, handover, predict, prepare, report, submit,
               train, user_dir)

# name -> (add_parser, run)
SUBCOMMANDS = {
    "convert": (convert.add_parser, convert.run),
    "prepare": (prepare.add_parser, prepare.run),
    "train": (train.add_parser, train.run),
    "handover": (handover.add_parser, handover.run),
    "child-mask": (child_mask.add_parser, child_mask.run),
    "report": (report.add_parser, report.run),
    "analyze": (analyze.add_parser, analyze.run),
    "predict": (predict.add_parser, predict.run),
    "submit": (submit.add_parser, submit.run),
    "export-adapter": (export.add_adapter_parser, export.run_adapter),
    "export-merged": (export.add_merged_parser, export.run_merged),
    "export-hf": (export.add_hf_parser, export.run_hf),
    "export-peft": (export.add_peft_parser, export.run_peft),
    "user-dir": (user_dir.add_parser, user_dir.run),
}


# subcommands that need no fairseq registry, or register where they do (checkpoint loading,
# a model rebuilt for Child-Tuning's Fisher pass): their refusals come without fairseq's
# seconds of imports
REGISTERS_ON_DEMAND = ("report", "user-dir", "train", "prepare")


def import_user_dir(path):
    """Import a user's plugin directory the way fairseq's --user-dir does."""
    path = os.path.abspath(path)
    if not os.path.isfile(os.path.join(path, "__init__.py")):
        raise EhftError("--user-dir %s: expected a Python package directory (with __init__.py)"
                        % path)
    parent, name = os.path.split(path)
    sys.path.insert(0, parent)
    importlib.import_module(name)


def build_parser():
    parser = argparse.ArgumentParser(prog="ehft", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_parser, run) in SUBCOMMANDS.items():
        p = add_parser(sub, name)
        p.add_argument("--user-dir", help="a plugin package to import first (your own tasks)")
        p.set_defaults(run=run)
    return parser


def main(argv=None):
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO, stream=sys.stderr, force=True)
    args = build_parser().parse_args(argv)
    try:
        if args.command not in REGISTERS_ON_DEMAND:
            import ehft_plugin

            ehft_plugin.register()
        if args.user_dir:
            import_user_dir(args.user_dir)
        return args.run(args) or 0
    except (EhftError, OSError) as e:  # OSError: a file that cannot be read or written
        if os.environ.get(DEBUG_VARIABLE):
            raise
        print("ehft %s: error: %s" % (args.command, e), file=sys.stderr)
        return 2
