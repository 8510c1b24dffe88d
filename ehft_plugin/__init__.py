"""ehft_plugin: Efficient Head Finetuning and layer-stratified PEFT for fairseq RoBERTa.

Importing the package (as fairseq's --user-dir does) registers the plugin's task, model,
criterion, optimizer and BPE, and installs its changes to fairseq (all listed in
ehft_plugin/compat.py): checkpoints load safely under torch >= 2.6, torchrun forms one world
(distributed.py) whose ranks check at every validation that they hold the same parameters
(replicas.py).

The `ehft` command is the exception: importing fairseq takes seconds, so it registers only
when a subcommand needs fairseq's registries (`register()`), and `ehft --help`, `ehft
report` or a refused argument answer without it.
"""

import logging
import os
import sys

__version__ = "0.1.0"

# fairseq announces at import that an unrelated speech task lacks tensorboardX
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

_registered = False


def register():
    """Register the plugin with fairseq and install its changes (once; later calls return)."""
    global _registered
    if _registered:
        return
    from . import compat

    compat.install()  # every change to fairseq, each checked against the installed version
    from . import criterions, models, optim, tasks  # noqa: F401  (registration)
    from .data import backbone_bpe  # noqa: F401  (bpe: ehft_backbone, for fairseq's hub)

    _registered = True


if os.path.basename(sys.argv[0] if sys.argv else "") != "ehft":
    register()
