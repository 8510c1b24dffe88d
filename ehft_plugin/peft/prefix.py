"""Prefix-tuning (Li & Liang 2021, §4): every attention layer attends to `len` trainable
key/value vectors placed before the sequence.

`PrefixSelfAttention` takes over an encoder layer's `self_attn`: it keeps that module's
q/k/v/out projections under the same names (pretrained keys are unchanged, LoRA on them
still applies) and adds `prefix.*` parameters. With `mlp > 0` the prefixes are produced by
a reparameterisation MLP from a smaller embedding, as in the paper (§4.3), which steadies
training; without it they are trained directly.

Unlike BitFit and LoRA, prefix-tuning cannot start as an exact identity of the pretrained
model: the prefix positions always take part of the attention mass.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


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


class PrefixSelfAttention(nn.Module):
    """Encoder self-attention over [prefix; sequence] keys and values."""

    def __init__(self, attn, length, mlp_hidden=0):
        super().__init__()
        if not attn.self_attention:
            raise ValueError("prefix-tuning applies to encoder self-attention only")
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj)
        self.num_heads, self.head_dim = attn.num_heads, attn.head_dim
        self.dropout = attn.dropout_module.p
        self.prefix = PrefixEncoder(length, attn.embed_dim, mlp_hidden)
        self.self_attention = True

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False,
                attn_mask=None, **unused):
        length, batch, dim = query.shape
        prefix_key, prefix_value = self.prefix()

        def heads(x):  # (T, B, C) -> (B, H, T, head_dim)
            return x.view(x.size(0), batch, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

        def with_prefix(projected, prefix):
            prefix = prefix.to(projected.dtype).unsqueeze(1).expand(-1, batch, -1)
            return heads(torch.cat([prefix, projected], dim=0))

        q = heads(self.q_proj(query))
        k = with_prefix(self.k_proj(query), prefix_key)
        v = with_prefix(self.v_proj(query), prefix_value)
        mask = self._mask(key_padding_mask, attn_mask, batch, length, q.dtype, q.device)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        out = out.permute(2, 0, 1, 3).reshape(length, batch, dim)
        return self.out_proj(out), None

    def _mask(self, key_padding_mask, attn_mask, batch, length, dtype, device):
        """Additive (B, 1, T, L+T) mask: prefix positions are always visible."""
        total = self.prefix.length + length
        mask = torch.zeros(batch, 1, length, total, dtype=dtype, device=device)
        if key_padding_mask is not None:
            padded = key_padding_mask.to(torch.bool)
            mask[:, :, :, self.prefix.length:] = mask[:, :, :, self.prefix.length:].masked_fill(
                padded[:, None, None, :], float("-inf"))
        if attn_mask is not None:
            mask[:, :, :, self.prefix.length:] += attn_mask.to(dtype)
        return mask
