"""What software finished a stage, recorded in its done.json.

Records are kept for months (the accuracy grid is completed over many runs), so each one says
which plugin code and which libraries produced it: a later change to the training code shows
up in the records it made instead of being indistinguishable from the earlier cells.
"""

import importlib.metadata
import os
import platform
import subprocess
import sys

PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # ehft_plugin/


def software():
    import torch

    from .. import __version__

    return dict({"ehft_plugin": __version__, "fairseq": fairseq_version(),
                 "torch": torch.__version__, "python": platform.python_version()},
                **git_state(os.path.dirname(PLUGIN_DIR)))


def fairseq_version():
    """fairseq's __version__, read from its distribution when fairseq is not imported: `ehft
    train` does not import it (every task, model and criterion registering itself takes
    seconds), its fairseq-train children do."""
    if "fairseq" in sys.modules:
        return sys.modules["fairseq"].__version__
    [distribution] = importlib.metadata.packages_distributions()["fairseq"][:1]
    return importlib.metadata.version(distribution)


def git_state(root):
    """The checkout's commit and whether the plugin's tracked files differ from it; {} when
    the plugin is not in a git checkout (an installed package) or git cannot tell."""
    if not os.path.exists(os.path.join(root, ".git")):
        return {}

    def git(*args):
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              timeout=30)

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--",
                      os.path.basename(PLUGIN_DIR))
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if commit.returncode != 0 or changed.returncode != 0:
        return {}
    return {"git_commit": commit.stdout.strip(),
            "plugin_code_modified": bool(changed.stdout.strip())}
