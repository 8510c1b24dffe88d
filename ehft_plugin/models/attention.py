"""Encoder self-attention on `F.scaled_dot_product_attention` (`--attention-kernel sdpa`).

fairseq's `MultiheadAttention` hands `q_proj.weight` & co. straight to
`F.multi_head_attention_forward` (which skips a LoRA wrapped around a projection) and widens
the padding mask into a float mask per head; with LoRA on a projection it falls back to its
own Python attention (softmax of explicit batched matmuls). `SdpaSelfAttention` takes over a
layer's `self_attn` for every plan instead: it calls the projection *modules* (so LoRA
applies), and gives SDPA one additive key mask broadcast over heads and queries, built once
per batch, or none when the batch has no padding, so that a GPU can run its fused (flash or
memory-efficient) kernels. The projections keep their names, so checkpoints are unchanged; fairseq's upgrade of
old checkpoints (a packed `in_proj_weight`) still applies.

Subclasses add key/value vectors before the sequence (prefix-tuning, peft/prefix.py) through
`extra_key_values`.
"""

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F
from fairseq.modules.multihead_attention import MultiheadAttention

from ..peft.lora import LoRALinear, shared_input_forward, shares_input

KERNELS = ("sdpa", "fairseq")


class SdpaSelfAttention(nn.Module):
    """A fairseq encoder `self_attn` computed with one SDPA call, for (T, B, C) inputs."""

    def __init__(self, attn):
        super().__init__()
        if not attn.self_attention:
            raise ValueError("SdpaSelfAttention applies to encoder self-attention only")
        if getattr(attn, "bias_k", None) is not None or getattr(attn, "add_zero_attn", False):
            raise ValueError("SdpaSelfAttention does not implement --add-bias-kv/--add-zero-attn")
        # fairseq's order: parameters, flat fp16 master copies and optimizer states line up
        self.k_proj, self.v_proj, self.q_proj, self.out_proj = (
            attn.k_proj, attn.v_proj, attn.q_proj, attn.out_proj)
        self.embed_dim, self.num_heads, self.head_dim = attn.embed_dim, attn.num_heads, \
            attn.head_dim
        # from fairseq's module, or from another SdpaSelfAttention (prefix-tuning takes one over)
        self.dropout = attn.dropout_module.p if hasattr(attn, "dropout_module") else attn.dropout
        self.self_attention = True

    # a checkpoint with a packed in_proj_weight is split as fairseq's own module does
    upgrade_state_dict_named = MultiheadAttention.upgrade_state_dict_named

    def extra_key_values(self, batch, dtype):
        """(keys, values), each (P, B, C), attended to before the sequence; None for none."""
        return None

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=False,
                attn_mask=None, **unused):
        if need_weights:
            raise NotImplementedError("--attention-kernel sdpa returns no attention weights; "
                                      "use --attention-kernel fairseq")
        length, batch, dim = query.shape
        q, k, v = self._projections(query)
        extra = self.extra_key_values(batch, k.dtype)
        if extra is not None:
            k, v = torch.cat([extra[0], k]), torch.cat([extra[1], v])
        mask = self._mask(key_padding_mask, attn_mask, batch, k.size(0) - length, k.dtype)
        out = F.scaled_dot_product_attention(
            self._heads(q, batch), self._heads(k, batch),
            self._heads(v, batch), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0)
        out = out.permute(2, 0, 1, 3).reshape(length, batch, dim)
        return self.out_proj(out), None

    def _projections(self, x):
        """q, k, v of `x`; the LoRA-adapted ones among them with one A matmul
        (peft/lora.shared_input_forward) when they can share it."""
        projections = [self.q_proj, self.k_proj, self.v_proj]
        lora = [p for p in projections if isinstance(p, LoRALinear)]
        if not shares_input(lora):
            return [p(x) for p in projections]
        outs = dict(zip(map(id, lora), shared_input_forward(lora, x)))
        return [outs[id(p)] if id(p) in outs else p(x) for p in projections]

    def _heads(self, x, batch):  # (T, B, C) -> (B, H, T, head_dim)
        return x.view(x.size(0), batch, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _mask(self, key_padding_mask, attn_mask, batch, extra, dtype):
        """None (attend everywhere: the fused kernels' fast case) or an additive float mask:
        0 for the keys to attend to, -inf for padding, plus fairseq's (T, T) attn_mask if
        any. The `extra` leading keys (a prefix) are always visible. Without an attn_mask
        the mask depends on the batch only: every layer is handed the same padding tensor,
        so the first layer builds it and the others reuse it (see PaddingMask)."""
        if attn_mask is None:
            return None if key_padding_mask is None else _padding_mask.get(
                key_padding_mask, batch, extra, dtype)
        additive = F.pad(attn_mask.to(dtype), (extra, 0))  # prefix columns: 0, always visible
        if key_padding_mask is not None:
            keep = ~key_padding_mask.to(torch.bool)
            if extra:
                keep = torch.cat([keep.new_ones(batch, extra), keep], dim=1)
            additive = additive.masked_fill(~keep[:, None, None, :], float("-inf"))
        return additive


class PaddingMask:
    """The additive (B, 1, 1, S) key mask of the last padding mask seen, built once per
    batch instead of once per layer. Its rows are stored 8 elements apart (the columns
    beyond S unused): CUDA's memory-efficient SDPA kernel wants its bias aligned so, and
    would otherwise pad a copy in every layer. SDPA turns a boolean mask into this same
    additive one, so outputs are those of the boolean mask."""

    def __init__(self):
        self._source, self._key, self._mask = None, None, None

    def get(self, key_padding_mask, batch, extra, dtype):
        key = (extra, dtype, key_padding_mask.shape, key_padding_mask.device)
        if self._source is None or self._source() is not key_padding_mask or self._key != key:
            pads = key_padding_mask.to(torch.bool)
            if extra:
                pads = torch.cat([pads.new_zeros(batch, extra), pads], dim=1)
            length = pads.size(1)
            aligned = torch.zeros(batch, -(-length // 8) * 8, dtype=dtype, device=pads.device)
            mask = aligned[:, :length].masked_fill_(pads, float("-inf"))
            self._source, self._key = weakref.ref(key_padding_mask), key
            self._mask = mask[:, None, None, :]
        return self._mask


_padding_mask = PaddingMask()


def use_sdpa(layers) -> None:
    """Put every encoder layer's self-attention on SDPA (identity of outputs: tests)."""
    for layer in layers:
        if not isinstance(layer.self_attn, SdpaSelfAttention):
            layer.self_attn = SdpaSelfAttention(layer.self_attn)
