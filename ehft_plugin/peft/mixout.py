"""Mixout (Lee et al., ICLR 2020): finetuning that mixes each weight matrix with its value at
the start of the run.

In training, every forward draws a keep mask: with probability p a weight is replaced by its
start value u, and the kept ones are rescaled so that the expectation is the weight itself,

    w̃ = u + keep ⊙ (w − u) / (1 − p),    keep ~ Bernoulli(1 − p),    E[w̃] = w;

in evaluation the layer is the plain linear layer (w̃ = w). As in Lee et al.'s code, one
draw covers a whole input unit (a column of W), the way dropout before the layer drops an
input; the gradient is autograd's, keep / (1 − p) (their code omits the 1 / (1 − p), which
Adam's per-weight scaling makes nearly irrelevant).

u is a buffer, `mixout_target`, saved with the checkpoint so that a resumed run mixes with
the same values; a checkpoint without it (the pretrained one, or a stage start) gives the
weights it loads as u (roberta_ehft's upgrade_state_dict_named). Mixing biases is not part
of the method.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

TARGET = "mixout_target"


class MixoutLinear(nn.Linear):
    def __init__(self, in_features, out_features, p, bias=True, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if not 0 <= p < 1:
            raise ValueError("mixout p=%s: expected 0 <= p < 1" % p)
        self.p = p
        self.register_buffer(TARGET, torch.empty_like(self.weight, requires_grad=False))

    @classmethod
    def wrap(cls, linear: nn.Linear, p) -> "MixoutLinear":
        """A mixout layer sharing `linear`'s weight and bias, mixing toward their values now
        (until a checkpoint's are loaded)."""
        mixout = cls(linear.in_features, linear.out_features, p, bias=linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype)
        mixout.weight = linear.weight
        mixout.bias = linear.bias
        with torch.no_grad():
            getattr(mixout, TARGET).copy_(linear.weight)
        return mixout

    def mixed_weight(self):
        target = getattr(self, TARGET)
        keep = torch.empty(self.in_features, device=self.weight.device,
                           dtype=self.weight.dtype).bernoulli_(1 - self.p)
        return torch.addcmul(target, self.weight - target, keep / (1 - self.p))

    def forward(self, x):
        if not self.training or self.p == 0:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, self.mixed_weight(), self.bias)

    def extra_repr(self):
        return super().extra_repr() + ", mixout p=%g" % self.p
