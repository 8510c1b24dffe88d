"""Which fused kernels a run uses, so that the log says it instead of leaving users to guess.

NVIDIA apex is optional: when it is importable and the model is on CUDA, fairseq's LayerNorm
is apex's FusedLayerNorm and `--optimizer ehft_adamw` steps with apex's FusedAdam. Without it
the run uses torch's own kernels (torch.nn.LayerNorm; torch.optim.AdamW, fused, or foreach on
a CPU before torch 2.4). apex is not on PyPI: the PyPI package named `apex` is an unrelated web
toolkit, so a bare `import apex` proves nothing; only apex's CUDA submodules count.
"""

import importlib
from collections import Counter


def apex_module(name):
    """apex's `name` submodule (e.g. "optimizers"), or None when NVIDIA apex is not importable."""
    try:
        return importlib.import_module("apex." + name)
    except Exception:  # ImportError, or an unrelated `apex` failing in its own way
        return None


def apex_fused_adam():
    """apex's FusedAdam class, when NVIDIA apex is built with its CUDA extensions."""
    module = apex_module("optimizers")
    return getattr(module, "FusedAdam", None)


def _kernel_name(module):
    if "Fused" in type(module).__name__:  # fairseq's subclass of apex's FusedLayerNorm
        return "apex FusedLayerNorm"
    return "%s.%s" % (type(module).__module__, type(module).__qualname__)


def layer_norm_kernels(model):
    """'13 x torch.nn.modules.normalization.LayerNorm'-style summary of a model's LayerNorms."""
    counts = Counter(_kernel_name(m) for m in model.modules() if "LayerNorm" in type(m).__name__)
    text = ", ".join("%d x %s" % (n, name) for name, n in sorted(counts.items()))
    if apex_module("normalization") is None:
        text += " (NVIDIA apex not importable)"
    return text
