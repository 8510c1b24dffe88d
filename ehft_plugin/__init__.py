"""ehft_plugin: Efficient Head Finetuning and layer-stratified PEFT for fairseq RoBERTa.

Importing the package (as fairseq's --user-dir does) registers the plugin's
tasks and criterions and makes fairseq load checkpoints safely under torch >= 2.6.
"""

__version__ = "0.1.0"

from . import safe_loading

safe_loading.install()

from . import criterions, tasks  # noqa: E402,F401  (registration)
