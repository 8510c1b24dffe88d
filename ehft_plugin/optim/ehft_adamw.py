"""`--optimizer ehft_adamw`: AdamW (Loshchilov & Hutter, decoupled weight decay) stepping with
the fastest kernel the machine has, and saying which in the log.

fairseq's own `adam` is the same algorithm, but without NVIDIA apex it steps parameter by
parameter in Python. `--adamw-kernel auto` takes apex's FusedAdam when apex is importable and
the parameters are on CUDA, else torch.optim.AdamW with fused=True, on CUDA and, from torch
2.4, on CPU too; foreach=True (one multi-tensor call per operation) on an older torch's CPU.
On CPU the fused kernel is the fast one: benchmarks/optimizer_step.py measured it 3.5-5.4x
faster than fairseq's `adam`, and foreach no faster than `adam` (benchmarks/results/). The
flags are fairseq adam's (--adam-betas, --adam-eps, --weight-decay), so switching optimizer
changes one word.

One difference from fairseq's `adam`, which follows the original paper's Algorithm 1: torch
adds eps to the bias-corrected sqrt(v), fairseq to the uncorrected one, so early updates of
parameters whose squared gradients are below ~eps^2 differ slightly.
"""

import ast
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, List

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II, OmegaConf

from ..errors import ConfigError, one_line_errors
from ..fairseq_compat import preflight
from ..fairseq_compat.kernels import apex_fused_adam

logger = logging.getLogger(__name__)

KERNELS = ("auto", "apex", "fused", "foreach", "loop")


@dataclass
class EhftAdamWConfig(FairseqDataclass):
    adam_betas: Any = field(default=(0.9, 0.999),
                            metadata={"help": "(beta1, beta2), each in [0, 1)"})
    adam_eps: float = field(default=1e-8, metadata={"help": "added to sqrt(v), > 0"})
    weight_decay: float = field(default=0.0,
                                metadata={"help": "decoupled weight decay per unit lr, >= 0"})
    adamw_kernel: ChoiceEnum(KERNELS) = field(
        default="auto", metadata={"help": "auto: apex FusedAdam if importable on CUDA, else "
                                          "torch's fused kernel (foreach on CPU before torch "
                                          "2.4); or force one (loop: torch's per-parameter "
                                          "reference)"})
    no_decay_bias_norm: bool = field(
        default=False, metadata={"help": "no weight decay for parameter tensors of fewer than "
                                         "2 dimensions: biases and LayerNorm weights (HF "
                                         "Trainer's and the EH-FT authors' grouping)"})
    lr: List[float] = II("optimization.lr")


def fused_on_cpu(version=torch.__version__):
    """torch >= 2.4 has a fused AdamW kernel for CPU tensors too."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) >= (2, 4)


def choose_kernel(requested, cuda, apex_available, cpu_fused=None):
    """The kernel `--adamw-kernel requested` means on this device (pure, for tests)."""
    if requested == "auto":
        if cuda:
            return "apex" if apex_available else "fused"
        return "fused" if (fused_on_cpu() if cpu_fused is None else cpu_fused) else "foreach"
    if requested == "apex" and not (cuda and apex_available):
        raise ConfigError("--adamw-kernel apex needs NVIDIA apex built with its CUDA extensions "
                         "and parameters on CUDA (%s); use --adamw-kernel auto"
                         % ("apex is not importable" if not apex_available else "they are not"))
    return requested


def parse_betas(value):
    """--adam-betas as fairseq writes it ("(0.9,0.98)") or as a config holds it."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            value = None
    elif OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in value)):
        return None
    return tuple(float(b) for b in value)


@one_line_errors
def check_config(cfg, cuda):
    """Refuse bad flags before fairseq-train writes anything (torch would only say
    'Invalid beta parameter' at the first update)."""
    if parse_betas(cfg.adam_betas) is None:
        raise ConfigError("--adam-betas %r: expected two numbers in [0, 1), e.g. '(0.9,0.98)'"
                          % (cfg.adam_betas,))
    if not cfg.adam_eps > 0:
        raise ConfigError("--adam-eps %r: expected a number > 0" % cfg.adam_eps)
    if not cfg.weight_decay >= 0:
        raise ConfigError("--weight-decay %r: expected a number >= 0" % cfg.weight_decay)
    choose_kernel(cfg.adamw_kernel, cuda, apex_fused_adam() is not None)


preflight.OPTIMIZER_CHECKS["ehft_adamw"] = check_config


def decay_groups(params):
    """Two parameter groups: the weight matrices (decayed) and the tensors of fewer than 2
    dimensions, biases and LayerNorm weights (weight_decay 0): the grouping of HF Trainer
    and of the EH-FT authors' code, who name biases and LayerNorm; here the dimension says
    it, so LoRA's and prefix-tuning's matrices decay and names need not be known. Given
    groups are split the same way, each keeping its own options."""
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    out = []
    for group in groups:
        tensors = list(group["params"])
        decayed = [p for p in tensors if p.dim() >= 2]
        kept = [p for p in tensors if p.dim() < 2]
        out += [dict(group, params=decayed)] if decayed else []
        out += [dict(group, params=kept, weight_decay=0.0)] if kept else []
    return out


class FusedAdamWWithScale(torch.optim.AdamW):
    """torch's fused AdamW, taking fairseq's loss scale into its kernel: fairseq's fp16
    optimizers hand an optimizer that `supports_step_with_scale` the factor the gradients are
    still multiplied by (loss scale over clipping), as they do apex's FusedAdam, instead of
    multiplying every fp32 gradient by its inverse in a pass of its own first. The kernel
    divides each gradient by it as it reads it (GradScaler's `grad_scale`), so one read and
    write of all the gradients per update is saved."""

    supports_step_with_scale = True

    def step(self, closure=None, scale=1.0):
        if not torch.is_tensor(scale) and scale == 1.0:
            return super().step(closure)
        device = self.param_groups[0]["params"][0].device
        if torch.is_tensor(scale):  # fairseq's 1 / multiply factor, already on the device
            self.grad_scale = scale.to(device=device, dtype=torch.float32).reshape(())
        else:  # a fill is a launch with its argument; as_tensor would copy from the host
            buffer = self.__dict__.get("_scale_buffer")
            if buffer is None or buffer.device != device:
                buffer = self._scale_buffer = torch.empty((), device=device)
            self.grad_scale = buffer.fill_(scale)
        try:
            return super().step(closure)
        finally:
            self.grad_scale = None


def _first_param(params):
    for item in params:
        return item["params"][0] if isinstance(item, dict) else item
    raise ConfigError("--optimizer ehft_adamw got no trainable parameters")


@register_optimizer("ehft_adamw", dataclass=EhftAdamWConfig)
class EhftAdamW(FairseqOptimizer):
    @one_line_errors
    def __init__(self, cfg, params):
        super().__init__(cfg)
        params = list(params)
        device = _first_param(params).device
        if cfg.no_decay_bias_norm:
            params = decay_groups(params)
        fused_adam = apex_fused_adam()
        self.kernel = choose_kernel(cfg.adamw_kernel, device.type == "cuda",
                                    fused_adam is not None)
        if self.kernel == "apex":
            self._optimizer = fused_adam(params, adam_w_mode=True, **self.optimizer_config)
            name = "apex.optimizers.FusedAdam"
        else:
            adamw = FusedAdamWWithScale if self.kernel == "fused" else torch.optim.AdamW
            self._optimizer = adamw(params, **self.optimizer_config, **{
                "fused": {"fused": True}, "foreach": {"foreach": True},
                "loop": {"foreach": False}}[self.kernel])
            name = "torch.optim.AdamW(%s)" % self.kernel
        logger.info("--optimizer ehft_adamw: %s on %s, %d parameter tensors", name,
                    device.type, sum(1 for _ in self.params))

    @property
    def optimizer_config(self):
        """Overrides the values stored in a checkpoint's optimizer state on resume."""
        lr = self.cfg.lr[0] if isinstance(self.cfg.lr, Collection) else self.cfg.lr
        return {"lr": lr, "betas": parse_betas(self.cfg.adam_betas), "eps": self.cfg.adam_eps,
                "weight_decay": self.cfg.weight_decay}

    @property
    def supports_flat_params(self):
        # --fp16 hands over one flat fp32 master tensor, which has no biases to leave undecayed
        return not self.cfg.no_decay_bias_norm

