"""The plugin's RoBERTa encoder: fairseq's, built through fairseq's own extension points
(`RobertaEncoder.build_encoder`, `TransformerEncoder.build_encoder_layer`, as fairseq's
linformer plugin does) with three differences:

- one padding check per batch: fairseq's `forward_scriptable` keeps `has_pads =
  padding_mask.any()` as a tensor and tests it before every layer; on a GPU each test copies
  the flag to the host and waits for every queued kernel, 24 times in a RoBERTa-large
  forward. Here the flag is read once per batch, or not at all when the batch says whether it
  holds padding (glue_ehft's batches do, see RobertaEhftModel.forward). Otherwise the forward
  is fairseq's: the same embedding, zeroing of padded positions, layers and output dictionary;
- self-attention on SDPA (`--attention-kernel sdpa`, models/attention.py), installed by
  `use_attention_kernel` once fairseq's RobertaModel has initialised its weights: its
  `init_bert_params` draws q, k and v of every MultiheadAttention again, so a model built with
  either kernel holds fairseq's weights for a seed and leaves the random generator where
  fairseq's does (a new head's weights, dropout masks);
- every LayerNorm with `--layer-norm-eps` (backbones converted from BERT use 1e-12).
"""

import torch
from fairseq.models.roberta.model import RobertaEncoder
from fairseq.models.transformer import TransformerEncoder
from fairseq.modules import layer_norm
from fairseq.modules.transformer_sentence_encoder import init_bert_params

from .attention import use_sdpa

# torch's LayerNorm (fairseq's Fp32LayerNorm is one), or apex's fused one when fairseq uses it
LAYER_NORMS = (torch.nn.LayerNorm,) + ((layer_norm.FusedLayerNorm,)
                                        if layer_norm.has_fused_layernorm else ())


def set_layer_norm_eps(module, eps):
    """Give every LayerNorm in `module` this epsilon (None: leave fairseq's)."""
    if eps:
        for m in module.modules():
            if isinstance(m, LAYER_NORMS):
                m.eps = eps


def use_attention_kernel(encoder, args):
    """SDPA self-attention in every layer unless `--attention-kernel fairseq`."""
    if getattr(args, "attention_kernel", "sdpa") == "sdpa":  # older checkpoints: sdpa
        use_sdpa(encoder.layers)


class EhftRobertaEncoder(RobertaEncoder):
    def build_encoder(self, args, dictionary, embed_tokens):
        encoder = EhftTransformerEncoder(args, dictionary, embed_tokens)
        encoder.apply(init_bert_params)
        return encoder

    def build_lm_head(self, embed_dim, output_dim, activation_fn, weight):
        head = super().build_lm_head(embed_dim, output_dim, activation_fn, weight)
        set_layer_norm_eps(head, getattr(self.args, "layer_norm_eps", None))
        return head


class EhftTransformerEncoder(TransformerEncoder):
    known_has_pads = None  # the batch's own flag (a host bool) while a forward runs

    def __init__(self, args, dictionary, embed_tokens):
        super().__init__(args, dictionary, embed_tokens)
        for norm in (self.layernorm_embedding, self.layer_norm):
            if norm is not None:
                set_layer_norm_eps(norm, getattr(args, "layer_norm_eps", None))

    def build_encoder_layer(self, cfg):
        layer = super().build_encoder_layer(cfg)
        set_layer_norm_eps(layer, getattr(self.args, "layer_norm_eps", None))
        return layer

    def forward_scriptable(self, src_tokens, src_lengths=None, return_all_hiddens=False,
                           token_embeddings=None):
        padding_mask = src_tokens.eq(self.padding_idx)
        has_pads = self.known_has_pads
        if has_pads is None:
            has_pads = src_tokens.device.type == "xla" or bool(padding_mask.any())  # one read
        x, embedding = self.forward_embedding(src_tokens, token_embeddings)
        if has_pads:  # fairseq multiplies by (1 - mask * has_pads): the same numbers
            x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
        x = x.transpose(0, 1)  # B x T x C -> T x B x C
        states, fc_results = ([x], []) if return_all_hiddens else ([], [])
        for layer in self.layers:
            out = layer(x, encoder_padding_mask=padding_mask if has_pads else None)
            x, fc_result = out if isinstance(out, tuple) and len(out) == 2 else (out, None)
            if return_all_hiddens:
                states.append(x)
                fc_results.append(fc_result)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        lengths = src_tokens.ne(self.padding_idx).sum(dim=1, dtype=torch.int32).reshape(-1, 1)
        return {"encoder_out": [x], "encoder_padding_mask": [padding_mask],
                "encoder_embedding": [embedding], "encoder_states": states,
                "fc_results": fc_results, "src_tokens": [], "src_lengths": [lengths.contiguous()]}
