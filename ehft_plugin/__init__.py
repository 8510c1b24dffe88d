"""ehft_plugin: Efficient Head Finetuning and layer-stratified PEFT for fairseq RoBERTa.

Importing the package (as fairseq's --user-dir does) registers the plugin's
tasks and criterions, makes fairseq load checkpoints safely under torch >= 2.6 and
form one world under torchrun (ehft_plugin/distributed.py) whose ranks check at every
validation that they hold the same parameters (ehft_plugin/replicas.py).
"""

import logging

__version__ = "0.1.0"

# fairseq announces at import that an unrelated speech task lacks tensorboardX
logging.getLogger("fairseq.tasks.text_to_speech").setLevel(logging.WARNING)

from . import distributed, replicas, safe_loading  # noqa: E402

safe_loading.install()
distributed.install()  # one world under torchrun, on CPUs too
replicas.install()  # ranks compare their parameters at every validation

from . import criterions, models, optim, tasks  # noqa: E402,F401  (registration)
from .data import backbone_bpe  # noqa: E402,F401  (bpe: ehft_backbone, for fairseq's hub)
