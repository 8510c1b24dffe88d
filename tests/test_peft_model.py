"""PEFT modules on a tiny RoBERTa: identity at init, LoRA really runs, only the planned
parameters move, counts match closed forms, merge is exact, heads as chosen."""

import argparse
import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import logits, tiny_batch, tiny_dictionary, tiny_model

from ehft_plugin.models.roberta_ehft import RobertaEhftModel, roberta_ehft_large

from ehft_plugin.peft.lora import LoRALinear, merge_lora, unmerge_lora
from ehft_plugin.peft.plan import parse_plan
from ehft_plugin.peft.trainable import count_parameters, is_trainable

PLANS = ["full", "head", "bitfit", "lora", "0-1:lora(r=4,alpha=8,targets=all)",
         "spafit-1-1-II", "topk-1", "0:bitfit(attn),1:lora(r=2,targets=fc1+out)+bitfit(ffn)"]


def _plain_copy(model):
    """The same weights in a model without any PEFT module."""
    plain = tiny_model("full")
    state = {k: v for k, v in model.state_dict().items()
             if "lora_" not in k and ".prefix." not in k}
    plain.load_state_dict(state)
    return plain.eval()


@pytest.mark.parametrize("peft", PLANS)
def test_every_method_is_the_pretrained_model_at_initialisation(peft):
    model = tiny_model(peft).eval()
    tokens = tiny_batch()
    expected = logits(_plain_copy(model), tokens)
    # LoRA layers take fairseq's own (non-fused) attention path: same maths, other rounding
    torch.testing.assert_close(logits(model, tokens), expected, rtol=0, atol=1e-6)


def _randomise_lora_b(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.5)


def test_lora_really_runs_through_fairseq_attention():
    model = tiny_model("0-1:lora(r=4,alpha=8,targets=all)").eval()
    tokens = tiny_batch()
    before = logits(model, tokens)
    _randomise_lora_b(model)
    after = logits(model, tokens)
    assert (after - before).abs().max() > 1e-3  # q/k/v/out LoRA changes the output
    after.sum().backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(lora) == 2 * 2 * 6  # 2 layers x 6 targets x (A, B)
    for name, p in lora.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _train_steps(model, steps=3):
    tokens, target = tiny_batch(), torch.tensor([0, 1, 2, 1])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(logits(model, tokens), target).backward()
        optimizer.step()
    return optimizer


PREFIX_PLANS = ["prefix", "0-1:prefix(len=4,mlp=8)+lora(r=2)+bitfit(ffn)"]


@pytest.mark.parametrize("peft", PLANS + PREFIX_PLANS)
def test_only_the_planned_parameters_change(peft):
    model = tiny_model(peft).train()
    _randomise_lora_b(model)  # so LoRA A gets gradient from the first step
    before = copy.deepcopy(model.state_dict())
    _train_steps(model)
    plan = parse_plan(peft, 2)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    planned = {n for n, _ in model.named_parameters() if is_trainable(n, plan)}
    never_used = {n for n in planned if "lm_head" in n}
    assert changed == planned - never_used
    assert all(p.requires_grad == (n in planned) for n, p in model.named_parameters())


def test_the_optimizer_holds_only_trainable_parameters():
    model = tiny_model("bitfit")
    optimizer = _train_steps(model, steps=1)
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert held == trainable and set(map(id, optimizer.state)) == trainable
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def _trainable_total(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_bitfit_count_matches_the_closed_form():
    d, ffn, layers = 16, 32, 2
    head = (d * d + d) + (d * 3 + 3)  # dense + out_proj, 3 classes
    # per layer: q k v out biases (4d), fc1 (ffn), fc2 (d), two LayerNorm biases (2d)
    assert _trainable_total(tiny_model("bitfit")) == layers * (7 * d + ffn) + head
    only_ffn = tiny_model("0-1:bitfit(ffn)")
    assert _trainable_total(only_ffn) == layers * (ffn + 2 * d) + head


def test_lora_count_matches_the_closed_form():
    d, ffn, layers, r = 16, 32, 2, 4
    head = (d * d + d) + (d * 3 + 3)
    model = tiny_model("0-1:lora(r=4,targets=all)")
    attention = 4 * (r * d + d * r)
    feed_forward = (r * d + ffn * r) + (r * ffn + d * r)
    assert count_parameters(model)["lora"] == (layers * (attention + feed_forward),) * 2
    assert _trainable_total(model) == layers * (attention + feed_forward) + head


def test_lora_r8_on_attention_of_roberta_large_has_1572864_parameters():
    args = argparse.Namespace(peft="0-23:lora(r=8,targets=q+k+v+out)")
    roberta_ehft_large(args)
    task = SimpleNamespace(source_dictionary=tiny_dictionary(), max_positions=lambda: 512)
    model = RobertaEhftModel.build_model(args, task)
    assert count_parameters(model)["lora"][0] == 24 * 4 * 2 * 1024 * 8 == 1_572_864


def test_merged_lora_gives_the_same_outputs_and_unmerge_restores_weights():
    model = tiny_model("0-1:lora(r=4,targets=all)").eval()
    _randomise_lora_b(model)
    tokens = tiny_batch()
    expected = logits(model, tokens)
    weights = {n: p.clone() for n, p in model.named_parameters() if n.endswith("weight")}
    assert merge_lora(model) == 12
    torch.testing.assert_close(logits(model, tokens), expected, rtol=0, atol=1e-5)
    assert unmerge_lora(model) == 12
    for n, p in model.named_parameters():
        if n in weights:
            torch.testing.assert_close(p, weights[n], rtol=0, atol=1e-6)


def test_ehft_head_is_hidden_to_2048_to_classes_with_relu():
    head = tiny_model("head", head_type="ehft").classification_heads["head"]
    assert (head.dense.in_features, head.dense.out_features) == (16, 2048)
    assert head.out_proj.out_features == 3
    assert head.activation_fn(torch.tensor([-1.0])).item() == 0.0  # ReLU
    fairseq_head = tiny_model("head").classification_heads["head"]
    assert fairseq_head.dense.out_features == 16
    assert fairseq_head.activation_fn(torch.tensor([-1.0])).item() == pytest.approx(-0.7616, 1e-3)


# ---- prefix-tuning ----

def _reference_attention(attn, x, padding):
    """Li & Liang's attention over [prefix; sequence], written out step by step."""
    T, B, C = x.shape
    H, hd = attn.num_heads, attn.head_dim
    pk, pv = attn.prefix()
    out = torch.zeros(T, B, C)
    for b in range(B):
        keep = ~padding[b]
        k = torch.cat([pk, attn.k_proj(x[:, b])[keep]])
        v = torch.cat([pv, attn.v_proj(x[:, b])[keep]])
        q = attn.q_proj(x[:, b])
        for h in range(H):
            s = slice(h * hd, (h + 1) * hd)
            weights = torch.softmax(q[:, s] @ k[:, s].T / hd ** 0.5, dim=-1)
            out[:, b, s] = weights @ v[:, s]
    return attn.out_proj(out)


@pytest.mark.parametrize("mlp", [0, 8])
def test_prefix_attention_matches_the_written_out_definition(mlp):
    from ehft_plugin.peft.prefix import PrefixSelfAttention

    model = tiny_model("0-1:prefix(len=5,mlp=%d)" % mlp).eval()
    attn = model.encoder.sentence_encoder.layers[0].self_attn
    assert isinstance(attn, PrefixSelfAttention)
    x = torch.randn(7, 3, 16)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 5:] = padding[2, 3:] = True
    got, _ = attn(query=x, key=x, value=x, key_padding_mask=padding)
    expected = _reference_attention(attn, x, padding)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_prefix_with_padded_pairs_gives_each_example_its_unpadded_result():
    model = tiny_model("0-1:prefix(len=4)").eval()
    tokens = tiny_batch(batch=4, length=12)  # example i has 2*i padding positions
    batched = logits(model, tokens)
    for i in range(4):
        alone = logits(model, tokens[i:i + 1, :12 - 2 * i])
        torch.testing.assert_close(batched[i:i + 1], alone, rtol=0, atol=1e-5)


def test_prefix_changes_the_output_and_its_count_matches_the_closed_form():
    d, length, hidden, layers = 16, 4, 8, 2
    head = (d * d + d) + (d * 3 + 3)
    direct = tiny_model("0-1:prefix(len=4)")
    assert _trainable_total(direct) == layers * length * 2 * d + head
    with_mlp = tiny_model("0-1:prefix(len=4,mlp=8)")
    mlp = length * d + (d * hidden + hidden) + (hidden * 2 * d + 2 * d)
    assert _trainable_total(with_mlp) == layers * mlp + head
    # the one method that is not an identity at initialisation (see peft/prefix.py)
    tokens = tiny_batch()
    assert not torch.allclose(logits(direct.eval(), tokens),
                              logits(_plain_copy(direct), tokens), atol=1e-6)
