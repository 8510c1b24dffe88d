"""--attention-kernel sdpa (the default) computes what fairseq's MultiheadAttention computes,
forwards and backwards, for every kind of plan, with and without padding; the criterion keeps
its confusion counts on the logits' device; --pad-to-multiple changes shapes, not outputs."""

import pytest
import torch
from conftest import logits, tiny_batch, tiny_model

from ehft_plugin.models.attention import SdpaSelfAttention
from ehft_plugin.peft.prefix import PrefixSelfAttention

# LoRA on q, k and v (or two of them) computes their A matmuls as one (shared_input_forward)
PLANS = ["full", "bitfit", "0-1:lora(r=4,alpha=8,targets=all)",
         "0-1:lora(r=4,alpha=8,targets=q+v)+bitfit",
         "0:bitfit(attn),1:lora(r=2,targets=q+out)+bitfit(ffn)", "spafit-1-1-II"]


def _pair(peft):
    """The same weights under both kernels; LoRA's B made non-zero so that LoRA counts."""
    sdpa, stock = tiny_model(peft), tiny_model(peft, attention_kernel="fairseq")
    with torch.no_grad():
        for name, p in sdpa.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.5)
    stock.load_state_dict(sdpa.state_dict())
    return sdpa, stock


@pytest.mark.parametrize("peft", PLANS)
def test_sdpa_attention_matches_fairseq_forward_and_backward(peft):
    sdpa, stock = _pair(peft)
    layers = sdpa.encoder.sentence_encoder.layers
    assert all(isinstance(layer.self_attn, SdpaSelfAttention) for layer in layers)
    assert not any(isinstance(layer.self_attn, SdpaSelfAttention)
                   for layer in stock.encoder.sentence_encoder.layers)
    for padded in (True, False):
        tokens = tiny_batch() if padded else tiny_batch()[:1]  # example 0 has no padding
        got, expected = logits(sdpa, tokens), logits(stock, tokens)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        got.square().sum().backward()
        expected.square().sum().backward()
        stock_grads = dict(stock.named_parameters())
        for name, p in sdpa.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(p.grad, stock_grads[name].grad, rtol=1e-4,
                                           atol=1e-5, msg=name)
        sdpa.zero_grad()
        stock.zero_grad()


def test_checkpoint_keys_do_not_depend_on_the_kernel():
    sdpa, stock = _pair("0-1:lora(r=4,alpha=8,targets=all)")
    assert list(sdpa.state_dict()) == list(stock.state_dict())


def test_fairseq_additive_attention_mask_is_honoured():
    torch.manual_seed(0)
    model = tiny_model("full").eval()
    attn = model.encoder.sentence_encoder.layers[0].self_attn
    stock = tiny_model("full", attention_kernel="fairseq").eval()
    stock.load_state_dict(model.state_dict())
    reference = stock.encoder.sentence_encoder.layers[0].self_attn
    x = torch.randn(6, 2, 16)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, 4:] = True
    causal = torch.triu(torch.full((6, 6), float("-inf")), diagonal=1)
    got, _ = attn(x, x, x, key_padding_mask=padding, attn_mask=causal)
    expected, _ = reference(x, x, x, key_padding_mask=padding, attn_mask=causal,
                            need_weights=False)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_prefix_layers_are_sdpa_attention_with_extra_keys():
    model = tiny_model("0-1:prefix(len=3)")
    attn = model.encoder.sentence_encoder.layers[0].self_attn
    assert isinstance(attn, PrefixSelfAttention) and isinstance(attn, SdpaSelfAttention)
    keys, values = attn.extra_key_values(batch=5, dtype=torch.float32)
    assert keys.shape == values.shape == (3, 5, 16)


def test_need_weights_is_refused_with_the_flag_to_use():
    attn = tiny_model("full").encoder.sentence_encoder.layers[0].self_attn
    x = torch.randn(4, 1, 16)
    with pytest.raises(NotImplementedError, match="--attention-kernel fairseq"):
        attn(x, x, x, need_weights=True)


def test_criterion_counts_stay_tensors_on_the_logits_device_and_count_right():
    from ehft_plugin.metrics import confusion_matrix_logging

    targets = torch.tensor([0, 1, 2, 2, 1, 0, 2])
    predicted = torch.tensor([0, 2, 2, 1, 1, 0, 0])
    on_device = confusion_matrix_logging(targets, predicted, 3)
    as_ints = confusion_matrix_logging(targets.tolist(), predicted.tolist(), 3)
    assert set(on_device) == set(as_ints)
    assert all(torch.is_tensor(v) and v.device == targets.device for v in on_device.values())
    assert {k: int(v) for k, v in on_device.items()} == as_ints
    assert as_ints["_cm_2_0"] == 1 and as_ints["_cm_0_0"] == 2


def test_pad_to_multiple_pads_batches_and_leaves_logits_unchanged():
    from ehft_plugin.tasks.glue_ehft import RightPadToMultiple

    examples = [torch.tensor([0, 5, 6, 2]), torch.tensor([0, 7, 2])]
    plain = RightPadToMultiple(examples, pad_idx=1).collater(examples)
    padded = RightPadToMultiple(examples, pad_idx=1, multiple=8).collater(examples)
    assert plain.shape == (2, 4) and padded.shape == (2, 8)
    assert torch.equal(padded[:, :4], plain) and (padded[:, 4:] == 1).all()
    model = tiny_model("0-1:prefix(len=2)+bitfit").eval()
    torch.testing.assert_close(logits(model, padded), logits(model, plain), rtol=0, atol=1e-5)


def test_lora_projections_of_one_input_share_their_a_matmul_only_when_equivalent():
    from ehft_plugin.peft.lora import LoRALinear, shares_input

    def projections(plan):
        attn = tiny_model(plan).encoder.sentence_encoder.layers[0].self_attn
        return [p for p in (attn.q_proj, attn.k_proj, attn.v_proj) if isinstance(p, LoRALinear)]

    assert shares_input(projections("0-1:lora(r=4,targets=q+k+v)"))
    assert shares_input(projections("0-1:lora(r=4,targets=q+v)"))
    assert not shares_input(projections("0-1:lora(r=4,targets=q+out)"))  # one of q, k, v
    # dropout draws a mask per projection; one shared matmul would share one mask
    assert not shares_input(projections("0-1:lora(r=4,dropout=0.1,targets=q+k+v)"))
