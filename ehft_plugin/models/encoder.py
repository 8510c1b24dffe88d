"""The encoder's forward with one padding check per batch instead of one per layer.

fairseq's `TransformerEncoder.forward_scriptable` keeps `has_pads = padding_mask.any()` as a
tensor and tests it before every layer (`padding_mask if has_pads else None`). On a GPU each
test copies the flag to the host and waits for every queued kernel, 24 times in a
RoBERTa-large forward, so the host can never queue work ahead of the GPU. `check_padding_once`
gives one encoder a forward that reads the flag once per batch (or not at all: glue_ehft's
batches say whether they hold padding, see RobertaEhftModel.forward) and is otherwise fairseq's:
the same embedding, the same zeroing of padded positions, the same layers and the same output
dictionary. Stock fairseq models in the same process keep fairseq's own forward.
"""

import types

import torch


def forward_checking_padding_once(self, src_tokens, src_lengths=None, return_all_hiddens=False,
                                  token_embeddings=None):
    padding_mask = src_tokens.eq(self.padding_idx)
    has_pads = getattr(self, "known_has_pads", None)  # the batch's own flag (host), if given
    if has_pads is None:
        has_pads = src_tokens.device.type == "xla" or bool(padding_mask.any())  # one host read
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


def check_padding_once(encoder):
    """Bind the one-check forward to this `TransformerEncoder` (fairseq's `forward` calls
    `self.forward_scriptable`); returns the encoder."""
    encoder.forward_scriptable = types.MethodType(forward_checking_padding_once, encoder)
    return encoder
