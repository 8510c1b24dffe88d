"""LoRA (Hu et al. 2022, §4.1): h = W x + (alpha / r) * B A x, with A kaiming-uniform and B zero.

`LoRALinear` subclasses `nn.Linear`, so the pretrained `weight` and `bias` keep their names
and only `lora_A` / `lora_B` are new; B = 0 makes the layer the pretrained one at step 0.
Merging is an explicit function, never a side effect of train()/eval().
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LoRALinear(nn.Linear):
    def __init__(self, in_features, out_features, r, alpha, dropout=0.0, bias=True,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, device=device, dtype=dtype))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    @classmethod
    def wrap(cls, linear: nn.Linear, r, alpha, dropout=0.0) -> "LoRALinear":
        """A LoRA layer sharing `linear`'s weight and bias tensors."""
        lora = cls(linear.in_features, linear.out_features, r, alpha, dropout,
                   bias=linear.bias is not None, device=linear.weight.device,
                   dtype=linear.weight.dtype)
        lora.weight = linear.weight
        lora.bias = linear.bias
        return lora

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x):
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        # add's alpha scales inside the addition: one kernel fewer than `* scaling` then `+`
        return torch.add(out, F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B),
                         alpha=self.scaling)

    def extra_repr(self):
        return super().extra_repr() + ", r=%d, alpha=%g, merged=%s" % (self.r, self.alpha,
                                                                       self.merged)


def shares_input(layers) -> bool:
    """Whether `layers` (the projections one input goes through) can compute their LoRA
    branches together (`shared_input_forward`): two or more unmerged LoRA layers of one rank
    and scaling, without dropout (a mask each would differ from one shared mask)."""
    return (len(layers) >= 2 and all(isinstance(l, LoRALinear) and not l.merged
                                     and isinstance(l.lora_dropout, nn.Identity)
                                     for l in layers)
            and len({(l.r, l.scaling) for l in layers}) == 1)


def shared_input_forward(layers, x):
    """The outputs of LoRA `layers` that read the same `x` (attention's q, k, v), with their
    A matrices as one matmul: h = x (s [A_1; A_2; ...])^T, then per layer
    W_i x + b_i + h_i B_i^T as one addmm. The same values as calling each layer, in fewer
    kernels: per step and layer, one A matmul and one input gradient instead of one each per
    projection, the scaling applied once to the small stacked A instead of to every output's
    gradient, and no separate add."""
    r = layers[0].r
    stacked = torch.cat([layer.lora_A for layer in layers]).mul_(layers[0].scaling)
    parts = F.linear(x, stacked).split(r, dim=-1)
    outs = []
    for layer, h in zip(layers, parts):
        base = F.linear(x, layer.weight, layer.bias)
        flat = torch.addmm(base.view(-1, base.size(-1)), h.reshape(-1, r), layer.lora_B.t())
        outs.append(flat.view(base.shape))
    return outs


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold B A into W in every LoRA layer (for export or faster inference); returns the count."""
    count = 0
    for module in model.modules():
        if isinstance(module, LoRALinear) and not module.merged:
            module.weight.add_(module.delta_weight().to(module.weight.dtype))
            module.merged = True
            count += 1
    return count


@torch.no_grad()
def unmerge_lora(model: nn.Module) -> int:
    """Undo `merge_lora`, so training can continue with separate A and B."""
    count = 0
    for module in model.modules():
        if isinstance(module, LoRALinear) and module.merged:
            module.weight.sub_(module.delta_weight().to(module.weight.dtype))
            module.merged = False
            count += 1
    return count
