"""The method zoo and the stage hand-over, as pure functions."""

import pytest
import torch

from ehft_plugin.errors import CheckpointError
from ehft_plugin.train.handover import extract_head, extract_peft, graft_head, graft_params
from ehft_plugin.train.methods import (MethodError, resolve_method, split_updates,
                                       with_learning_rates)
from ehft_plugin.peft.plan import parse_plan


@pytest.mark.parametrize("name,stages", [
    ("ft", [("finetune", "full", 1e-5, 1.0, "")]),
    ("lp", [("finetune", "head", 5e-4, 1.0, "")]),
    ("lp-ft", [("stage1", "head", 5e-4, 0.1, ""), ("stage2", "full", 1e-5, 0.9, "stage1")]),
    ("bitfit", [("finetune", "bitfit", 5e-4, 1.0, "")]),
    ("lora", [("finetune", "0-11:lora(r=32,alpha=32,targets=q+v)", 5e-4, 1.0, "")]),
    ("prefix", [("finetune", "0-11:prefix(len=16)", 5e-3, 1.0, "")]),
    ("topk-3", [("finetune", "topk-3", 1e-5, 1.0, "")]),
    ("spafit-4-9-I", [("finetune", "spafit-4-9-I", 5e-4, 1.0, "")]),
    ("0-5:frozen,6-11:bitfit", [("finetune", "0-5:frozen,6-11:bitfit", 5e-4, 1.0, "")]),
    ("ehft-bitfit", [("stage1", "bitfit", 5e-4, 0.1, ""), ("stage2", "full", 1e-5, 0.9, "stage1")]),
    ("ehft-prefix", [("stage1", "0-11:prefix(len=16)", 5e-3, 0.1, ""),
                     ("stage2", "full", 1e-5, 0.9, "stage1")]),
    ("lora(r=8,targets=q+k+v)", [("finetune", "lora(r=8,targets=q+k+v)", 5e-4, 1.0, "")]),
    ("ehft-prefix(len=32)", [("stage1", "prefix(len=32)", 5e-3, 0.1, ""),
                             ("stage2", "full", 1e-5, 0.9, "stage1")]),
    ("ehft-0-5:frozen,6-11:lora(r=4)", [("stage1", "0-5:frozen,6-11:lora(r=4)", 5e-4, 0.1, ""),
                                        ("stage2", "full", 1e-5, 0.9, "stage1")]),
])
def test_method_table(name, stages):
    method = resolve_method(name, 12)
    assert [(s.name, s.peft, s.lr, s.share, s.head_from) for s in method.stages] == stages
    assert not any(s.reserve for s in method.stages)


@pytest.mark.parametrize("name,stage2", [
    # BitFit needs no module in stage 2: its biases are carried over as values
    ("ehft-bitfit-reserve", "0-11:full,emb:full"),
    ("ehft-lora-reserve", "0-11:full+lora(r=32,alpha=32,dropout=0,targets=q+v),emb:full"),
    ("ehft-prefix-reserve", "0-11:full+prefix(len=16,mlp=0),emb:full"),
    ("ehft-spafit-4-9-I-reserve",
     "0-3:full,4-8:full,9-11:full+lora(r=64,alpha=128,dropout=0,targets=q+k+v),emb:full"),
])
def test_reserve_variants_keep_the_peft_modules_training_in_stage2(name, stage2):
    plain = resolve_method(name[:-len("-reserve")], 12)
    method = resolve_method(name, 12)
    assert method.stages[0] == plain.stages[0]
    assert method.stages[1].reserve and method.stages[1].head_from == "stage1"
    assert method.stages[1].peft == stage2 and method.stages[1].lr == 1e-5
    parse_plan(stage2, 12)  # a plan fairseq-train accepts


def test_same_total_updates_for_every_method():
    for name in ("ft", "ehft-lora", "lp-ft", "bitfit"):
        assert sum(split_updates(2036, resolve_method(name, 24))) == 2036
    assert split_updates(2036, resolve_method("ehft-bitfit", 24)) == [204, 1832]
    assert split_updates(100, resolve_method("ehft-bitfit", 24, stage1_share=0.3)) == [30, 70]


def test_learning_rates_can_be_overridden_per_stage():
    method = with_learning_rates(resolve_method("ehft-lora", 12), stage1_lr=1e-3, stage2_lr=3e-5)
    assert [s.lr for s in method.stages] == [1e-3, 3e-5]
    assert with_learning_rates(resolve_method("ft", 12), stage2_lr=3e-5).stages[0].lr == 3e-5


@pytest.mark.parametrize("name,share,message", [
    ("ehft-bitfitt", 0.1, r"unknown --method 'ehft-bitfitt'; EH-FT takes a PEFT method"),
    ("ehft-lp-reserve", 0.1, r"unknown --method 'ehft-lp-reserve'"),
    ("bitfit-reserve", 0.1, r"unknown --method 'bitfit-reserve'"),
    ("sgd", 0.1, r"unknown --method 'sgd'; expected one of: ft, lp, lp-ft"),
    ("ehft-bitfit", 0.0, r"--stage1-ratio 0: expected a number strictly between 0 and 1"),
    ("ehft-bitfit", 1.0, r"strictly between 0 and 1"),
    ("0-3:frozen", 0.1, r"--method 0-3:frozen: layers 4-11 have no method"),
    ("topk-20", 0.1, r"topk-20: K must be between 1 and 12"),
    ("ehft-lora(r=0)", 0.1, r"--method ehft-lora\(r=0\): lora r=0: r must be an integer >= 1"),
])
def test_bad_methods_are_clear_errors(name, share, message):
    with pytest.raises(MethodError, match=message):
        resolve_method(name, 12, stage1_share=share)


def test_a_budget_too_small_for_two_stages_is_refused():
    with pytest.raises(MethodError, match=r"--total-updates 1 is too small"):
        split_updates(1, resolve_method("ehft-bitfit", 12))
    with pytest.raises(MethodError, match=r"--total-updates 0: expected > 0"):
        split_updates(0, resolve_method("ft", 12))


def _state(seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "encoder.sentence_encoder.layers.0.fc1.bias": torch.randn(4, generator=g),
        "encoder.sentence_encoder.layers.0.fc1.weight": torch.randn(4, 4, generator=g),
        "classification_heads.h.dense.weight": torch.randn(4, 4, generator=g),
        "classification_heads.h.dense.bias": torch.randn(4, generator=g),
        "classification_heads.h.out_proj.weight": torch.randn(2, 4, generator=g),
        "classification_heads.h.out_proj.bias": torch.randn(2, generator=g),
    }


def test_graft_keeps_the_original_backbone_and_takes_the_whole_stage1_head():
    original, stage1 = _state(0), _state(1)  # stage 1 changed biases too (BitFit)
    original["classification_heads.old.out_proj.weight"] = torch.zeros(3, 4)
    head = extract_head(stage1, "h")
    assert set(head) == {k for k in stage1 if k.startswith("classification_heads.h.")}
    grafted = graft_head(original, head)
    for key in ("encoder.sentence_encoder.layers.0.fc1.bias",
                "encoder.sentence_encoder.layers.0.fc1.weight"):
        assert grafted[key] is original[key]  # bit-identical: the same tensor
    for key, value in head.items():
        assert torch.equal(grafted[key], stage1[key])
    assert "classification_heads.old.out_proj.weight" not in grafted


def test_a_missing_head_is_an_error_not_a_random_head():
    with pytest.raises(CheckpointError, match=r"no classification head 'x' in the stage-1 "
                                              r"checkpoint \(heads: h\)"):
        extract_head(_state(0), "x")
    with pytest.raises(CheckpointError, match=r"classification_heads\.\* tensors only"):
        graft_head(_state(0), {})


def test_reserve_hands_over_what_stage1_trained_and_nothing_else():
    original, stage1 = _state(0), _state(1)
    stage1["encoder.sentence_encoder.layers.0.self_attn.q_proj.lora_A"] = torch.ones(2, 4)
    peft = extract_peft(stage1, parse_plan("0:lora(r=2,targets=q)+bitfit(fc1)", 1))
    assert set(peft) == {"encoder.sentence_encoder.layers.0.self_attn.q_proj.lora_A",
                         "encoder.sentence_encoder.layers.0.fc1.bias"}  # no head, no weights
    start = graft_params(graft_head(original, extract_head(stage1, "h")), peft)
    assert torch.equal(start["encoder.sentence_encoder.layers.0.fc1.bias"],
                       stage1["encoder.sentence_encoder.layers.0.fc1.bias"])
    assert start["encoder.sentence_encoder.layers.0.fc1.weight"] is original[
        "encoder.sentence_encoder.layers.0.fc1.weight"]
    # a 2019 original names the encoder "decoder.": the carried keys follow its names
    old = {k.replace("encoder.", "decoder.", 1): v for k, v in original.items()}
    grafted = graft_params(old, peft)
    assert "decoder.sentence_encoder.layers.0.self_attn.q_proj.lora_A" in grafted
    assert not any(k.startswith("encoder.") for k in grafted)
    with pytest.raises(CheckpointError, match=r"cannot carry .*fc1.bias over: shape \(3,\)"):
        graft_params(original, {"encoder.sentence_encoder.layers.0.fc1.bias": torch.ones(3)})
