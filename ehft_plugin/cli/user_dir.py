"""`ehft user-dir`: print the directory to give fairseq's --user-dir from anywhere."""

import os


def add_parser(sub, name):
    return sub.add_parser(
        name, help="print the path for fairseq-train --user-dir",
        description="Prints the installed plugin's directory, for "
                    "`fairseq-train ... --user-dir $(ehft user-dir)` from any working directory.",
    )


def run(args):
    import ehft_plugin

    print(os.path.dirname(os.path.abspath(ehft_plugin.__file__)))
