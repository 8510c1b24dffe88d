"""Prefix-tuning (Li & Liang 2021, §4): every attention layer attends to `len` trainable
key/value vectors placed before the sequence.

`PrefixSelfAttention` takes over an encoder layer's `self_attn`: it is the plugin's SDPA
attention (models/attention.py: the q/k/v/out projections under the same names, so pretrained
keys are unchanged and LoRA on them still applies) with `prefix.*` parameters whose keys and
values come before the sequence's, always visible. With `mlp > 0` the prefixes are produced by
a reparameterisation MLP from a smaller embedding, as in the paper (§4.3), which steadies
training; without it they are trained directly.

Unlike BitFit and LoRA, prefix-tuning cannot start as an exact identity of the pretrained
model: the prefix positions always take part of the attention mass.
"""

import torch
import torch.nn as nn

from ..models.attention import SdpaSelfAttention


class PrefixEncoder(nn.Module):
    """(len, 2 * dim) key and value prefixes, directly or through an MLP."""

    def __init__(self, length, dim, mlp_hidden=0):
        super().__init__()
        self.length, self.dim = length, dim
        if mlp_hidden > 0:
            self.embedding = nn.Parameter(torch.randn(length, dim) * 0.02)
            self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.Tanh(),
                                     nn.Linear(mlp_hidden, 2 * dim))
        else:
            self.embedding = nn.Parameter(torch.randn(length, 2 * dim) * 0.02)
            self.mlp = None

    def forward(self):
        prefix = self.mlp(self.embedding) if self.mlp is not None else self.embedding
        return prefix.split(self.dim, dim=-1)


class PrefixSelfAttention(SdpaSelfAttention):
    """Encoder self-attention over [prefix; sequence] keys and values."""

    def __init__(self, attn, length, mlp_hidden=0):
        super().__init__(attn)
        self.prefix = PrefixEncoder(length, attn.embed_dim, mlp_hidden)

    def extra_key_values(self, batch, dtype):
        # (P, C) -> (P, B, C): the same prefix for every example, as a broadcast view
        return tuple(p.to(dtype).unsqueeze(1).expand(-1, batch, -1) for p in self.prefix())
