"""The --peft grammar: one pure parser, canonical round trip, clear errors."""

import pytest

from ehft_plugin.peft.plan import BitFit, Frozen, Full, LoRA, PlanError, format_plan, parse_plan


@pytest.mark.parametrize("text,layers,canonical", [
    ("0-3:frozen,4-8:bitfit,9-23:lora(r=64,alpha=128,targets=q+k+v+out)+bitfit(ffn)", 24,
     "0-3:frozen,4-8:bitfit(targets=all),9-23:lora(r=64,alpha=128,dropout=0,targets=attn)"
     "+bitfit(targets=ffn)"),
    ("full", 12, "0-11:full,emb:full"),
    ("head", 12, "0-11:frozen"),
    ("bitfit", 12, "0-11:bitfit(targets=all)"),
    ("lora", 12, "0-11:lora(r=8,alpha=16,dropout=0,targets=q+v)"),
    ("prefix", 12, "0-11:prefix(len=16,mlp=0)"),
    ("topk-3", 12, "0-8:frozen,9-11:full"),
    ("topk-12", 12, "0-11:full"),
    ("spafit-4-9-I", 12, "0-3:frozen,4-8:bitfit(targets=all),"
                         "9-11:lora(r=64,alpha=128,dropout=0,targets=q+k+v)+bitfit(targets=ffn)"),
    ("spafit-8-12-II", 24, "0-7:frozen,8-11:bitfit(targets=all),"
                           "12-23:lora(r=64,alpha=128,dropout=0,targets=attn)+bitfit(targets=ffn)"),
    ("spafit-8-12-II", 12, "0-7:frozen,8-11:bitfit(targets=all)"),
    ("0:full,1:bitfit(q+fc1),2-3:lora(r=4,alpha=8,dropout=0.1,targets=fc1+fc2),emb:full", 4,
     "0:full,1:bitfit(targets=q+fc1),2-3:lora(r=4,alpha=8,dropout=0.1,targets=ffn),emb:full"),
    ("0-1:prefix(len=8,mlp=64)+lora(r=2)", 2,
     "0-1:prefix(len=8,mlp=64)+lora(r=2,alpha=16,dropout=0,targets=q+v)"),
    ("lora(r=8,targets=q+k+v)", 12, "0-11:lora(r=8,alpha=16,dropout=0,targets=q+k+v)"),
    ("prefix(len=32)", 12, "0-11:prefix(len=32,mlp=0)"),
    ("bitfit(attn)", 12, "0-11:bitfit(targets=attn)"),
    ("0-1:full+lora(r=2),emb:full", 2,  # -reserve stage 2: the layer and its modules train
     "0-1:full+lora(r=2,alpha=16,dropout=0,targets=q+v),emb:full"),
])
def test_plans_round_trip_through_their_canonical_form(text, layers, canonical):
    plan = parse_plan(text, layers)
    assert format_plan(plan) == canonical
    assert parse_plan(canonical, layers) == plan


def test_the_issue_example_means_what_it_says():
    plan = parse_plan("0-3:frozen,4-8:bitfit,9-23:lora(r=64,alpha=128,targets=q+k+v+out)"
                      "+bitfit(ffn)", 24)
    assert plan.methods_for_layer(0) == (Frozen(),)
    assert plan.method(5, BitFit).targets == ("q", "k", "v", "out", "fc1", "fc2", "attn_ln",
                                              "ffn_ln")
    assert plan.method(23, LoRA) == LoRA(r=64, alpha=128.0, targets=("q", "k", "v", "out"))
    assert plan.method(23, BitFit).targets == ("fc1", "fc2", "ffn_ln")
    assert not plan.train_embeddings
    assert parse_plan("full", 24).method(0, Full) and parse_plan("full", 24).train_embeddings


@pytest.mark.parametrize("text,message", [
    ("0-3:frozen", r"layers 4-11 have no method; every layer 0-11 needs one"),
    ("0-5:frozen,8-11:full", r"layers 6-7 have no method"),
    ("0-6:full,5-11:frozen", r"layer 5 is in more than one stratum"),
    ("0-12:full", r"layer 12 is out of range; this model has layers 0-11"),
    ("5-3:full", r"the first layer is after the last"),
    ("0-11:lorra", r"unknown method 'lorra'; expected one of: frozen, full, bitfit, lora, prefix"),
    ("0-11:lora(r=0)", r"^lora r=0: r must be an integer >= 1$"),
    ("0-11:lora(r=-2)", r"lora r=-2: r must be an integer >= 1"),
    ("0-11:lora(r=2.5)", r"lora r=2.5: r must be an integer >= 1"),
    ("0-11:lora(alpha=0)", r"lora alpha=0: alpha must be a number > 0"),
    ("0-11:lora(dropout=1)", r"lora dropout=1: dropout must be a number with 0 <= dropout < 1"),
    ("0-11:prefix(len=0)", r"prefix len=0: len must be an integer >= 1"),
    ("0-11:prefix(mlp=-1)", r"prefix mlp=-1: mlp must be an integer >= 0"),
    ("lora(r=0)", r"^lora r=0: r must be an integer >= 1$"),
    ("prefix(length=32)", r"prefix has no argument 'length'; expected: len, mlp"),
    ("bitfit(attn+x)", r"unknown bitfit target 'x'"),
    ("lorra(r=8)", r"unknown method 'lorra'"),
    ("0-11:lora(targets=q+w)", r"unknown lora target 'w'; expected: q, k, v, out, fc1, fc2, "
                               r"attn, ffn, all"),
    ("0-11:bitfit(attn_ln+x)", r"unknown bitfit target 'x'; expected: q, k, v, out, fc1, fc2, "
                               r"attn_ln, ffn_ln, attn, ffn, all"),
    ("0-11:lora(rank=4)", r"lora has no argument 'rank'; expected: r, alpha, dropout, targets"),
    ("0-11:lora(r=two)", r"lora r=two: r must be an integer >= 1"),
    ("0-11:frozen+bitfit", r"frozen cannot be combined with other methods"),
    ("0-11:full+bitfit", r"full already trains every bias; bitfit adds nothing"),
    ("0-11:lora+lora", r"names a method twice"),
    ("0-11", r"unknown --peft '0-11'"),
    ("lorra", r"unknown --peft 'lorra'; expected LAYERS:METHODS strata or one of: full, head, "
              r"bitfit, lora, prefix, topk-K"),
    ("", r"--peft is empty"),
    ("topk-13", r"topk-13: K must be between 1 and 12"),
    ("spafit-9-4-I", r"expected 0 <= A <= B <= 12"),
    ("0-11:full,emb:bitfit", r"embeddings are either full or frozen"),
])
def test_nonsense_is_rejected_with_a_clear_message(text, message):
    with pytest.raises(PlanError, match=message):
        parse_plan(text, 12)


def test_a_plan_of_the_wrong_type_is_named():
    with pytest.raises(PlanError, match=r"--peft 5 \(int\): expected a plan \(a string\)"):
        parse_plan(5, 12)

