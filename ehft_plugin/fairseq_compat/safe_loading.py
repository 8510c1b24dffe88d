"""Load fairseq checkpoints with `torch.load(weights_only=True)` and a small allow-list.

Since torch 2.6 `torch.load` refuses any pickled class it does not know, and
every fairseq checkpoint pickles an `argparse.Namespace` (`args`, and inside
`cfg` for older ones). Turning `weights_only` off would let a checkpoint run
arbitrary code; instead fairseq's loader is given exactly the globals real
fairseq checkpoints carry:

- `argparse.Namespace`: the training arguments of RoBERTa releases and of
  every checkpoint saved by fairseq's trainer;
- NumPy scalars and dtypes: fairseq before 0.10 stored `best`/`val_loss` as
  NumPy floats (values, not code).

A checkpoint that needs anything else fails with `CheckpointError` naming the
file and the global. The patch is applied to `fairseq.checkpoint_utils` only,
where every trainer resume, `--restore-file`, `--finetune-from-model` and
`from_pretrained` load goes through.
"""

import argparse
import logging
import pickle
import re
import types

import numpy as np
import torch

from ..errors import CheckpointError

logger = logging.getLogger(__name__)


def _numpy_globals():
    # numpy 2 moved numpy.core to numpy._core; old pickles name the old path
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    found = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        dtype_class = getattr(getattr(np, "dtypes", None), name, None)
        if dtype_class is not None:
            found.append(dtype_class)
    return found


ALLOWED_GLOBALS = [argparse.Namespace] + _numpy_globals()

# torch words it as "Unsupported global: GLOBAL x.y" or, for blocked modules such
# as os/posix, "Trying to load unsupported GLOBAL x.y whose module x is blocked"
_UNSUPPORTED = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")


def allowed_names():
    return sorted({g[1] if isinstance(g, tuple) else "%s.%s" % (g.__module__, g.__qualname__)
                   for g in ALLOWED_GLOBALS})


def safe_load(f, *args, **kwargs):
    """`torch.load` with weights_only=True and the fairseq allow-list, whatever the caller asked."""
    kwargs["weights_only"] = True
    name = getattr(f, "name", f)
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(f, *args, **kwargs)
    except pickle.UnpicklingError as e:
        match = _UNSUPPORTED.search(str(e))
        if not match:
            raise CheckpointError("%s: cannot be read as a torch checkpoint (%s)"
                                  % (name, str(e).splitlines()[-1])) from None
        raise CheckpointError(
            "%s: needs the Python global %s, which fairseq checkpoints do not carry. "
            "Checkpoints are loaded with weights_only=True so that a file cannot run code; "
            "allowed globals: %s. Re-save the checkpoint with plain tensors and built-in types, "
            "or load it yourself if you trust its source." % (name, match.group(1),
                                                             ", ".join(allowed_names()))
        ) from None


class TorchWithSafeLoad(types.ModuleType):
    """Stands in for `torch` inside fairseq.checkpoint_utils: only `load` differs."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return getattr(torch, name)

    load = staticmethod(safe_load)
    ehft_wrapped = True  # compat.WRAPPED: installed once
