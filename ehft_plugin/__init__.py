"""ehft_plugin: Efficient Head Finetuning and layer-stratified PEFT for fairseq RoBERTa.

Importing the package (as fairseq's --user-dir does) registers the plugin's task, model,
criterion, optimizer and BPE, and installs its changes to fairseq (all listed in
ehft_plugin/compat.py): checkpoints load safely under torch >= 2.6, torchrun forms one world
(distributed.py) whose ranks check at every validation that they hold the same parameters
(replicas.py).
"""

import logging

__version__ = "0.1.0"

# fairseq announces at import that an unrelated speech task lacks tensorboardX
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

from . import compat  # noqa: E402

compat.install()  # every change to fairseq, each checked against the installed version

from . import criterions, models, optim, tasks  # noqa: E402,F401  (registration)
from .data import backbone_bpe  # noqa: E402,F401  (bpe: ehft_backbone, for fairseq's hub)
