"""Checks of fairseq-train's configuration that must pass before anything runs or is
written: precision flags this machine can honour, --bf16 read as bfloat16 off TPUs, and valid
--optimizer ehft_adamw flags. `compat` runs `check` as fairseq's call_main starts."""

import logging

logger = logging.getLogger(__name__)


# fairseq registry name -> check(optimizer cfg, cuda): registered by the optimizer's module
# (optim/ehft_adamw.py), which fairseq imports before call_main
OPTIMIZER_CHECKS = {}


def check(cfg):
    import torch

    check_precision(cfg.common)
    bf16_without_tpu(cfg)
    check_optimizer = OPTIMIZER_CHECKS.get(getattr(cfg.optimizer, "_name", None))
    if check_optimizer is not None:
        check_optimizer(cfg.optimizer, torch.cuda.is_available() and not cfg.common.cpu)


def check_precision(common):
    """fairseq would call .half() on CPU and fail deep inside LayerNorm; say so up front."""
    import torch

    cpu = common.cpu or not torch.cuda.is_available()
    for flag in ("fp16", "memory_efficient_fp16", "amp"):
        if getattr(common, flag, False) and cpu:
            raise SystemExit("fairseq-train: error: --%s needs a CUDA device; on CPU train in "
                             "float32 or bfloat16 (drop --%s, or use --bf16)"
                             % (flag.replace("_", "-"), flag.replace("_", "-")))


def bf16_without_tpu(cfg):
    """fairseq reads --bf16 as "train on a TPU" (options.py sets --tpu with it) and then fails
    fetching an XLA device. Without torch_xla no TPU can be meant: train in bfloat16 on the
    GPU or CPU instead."""
    import importlib.util

    import torch
    from omegaconf import open_dict

    common = cfg.common
    if not (getattr(common, "bf16", False) and common.tpu
            and importlib.util.find_spec("torch_xla") is None):
        return
    for section in (common, cfg.distributed_training):
        with open_dict(section):
            section.tpu = False
    if getattr(cfg, "model", None) is not None and hasattr(cfg.model, "tpu"):
        cfg.model.tpu = False  # the model's argparse copy of the flags
    logger.info("--bf16 without torch_xla: bfloat16 on this machine's %s, not on a TPU",
                "CPU" if common.cpu or not torch.cuda.is_available() else "GPU")
