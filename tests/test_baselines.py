"""The EH-FT paper's other baselines (its Table 1): Mixout (Lee et al. 2020) and Child-Tuning_D
(Xu et al. 2021), as plan method, zoo methods, fairseq-train flags and `ehft child-mask`."""

import json
import shlex

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import (REPO, ehft, fairseq_train, logits, prepare_rte, stock_checkpoint, tiny_batch,
                      tiny_model)

from ehft_plugin.peft.child_tuning import apply_mask, choose_child, fisher_information
from ehft_plugin.errors import CheckpointError
from ehft_plugin.peft.mixout import MixoutLinear
from ehft_plugin.peft.plan import Full, Mixout, PlanError, format_plan, parse_plan
from ehft_plugin.peft.trainable import is_trainable

FAIRSEQ = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0"]
LAYER = "encoder.sentence_encoder.layers."


# ---- Mixout ----------------------------------------------------------------------

def test_mixout_keeps_the_expectation_and_is_the_identity_in_evaluation():
    torch.manual_seed(0)
    linear = nn.Linear(6, 4)
    layer = MixoutLinear.wrap(linear, p=0.7)
    start = layer.mixout_target.clone()
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))  # finetuned away from the start
    draws = torch.stack([layer.mixed_weight() for _ in range(20000)])
    # each draw keeps or replaces whole input units (columns), kept ones rescaled
    kept = start + (layer.weight - start) / 0.3
    for draw in draws[:50]:
        for j in range(6):
            column = draw[:, j]
            assert torch.allclose(column, start[:, j]) or torch.allclose(column, kept[:, j])
    assert torch.allclose(draws.mean(0), layer.weight, atol=0.05)  # E[w̃] = w
    x = torch.randn(3, 6)
    layer.eval()
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    layer.train()
    assert not torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert torch.equal(MixoutLinear.wrap(linear, p=0.0).train()(x), linear(x))


def test_the_gradient_reaches_only_the_kept_units_scaled_by_one_over_keep():
    torch.manual_seed(1)
    layer = MixoutLinear.wrap(nn.Linear(5, 3), p=0.5)
    torch.manual_seed(2)
    layer(torch.ones(1, 5)).sum().backward()
    torch.manual_seed(2)
    keep = torch.empty(5).bernoulli_(0.5)
    assert torch.allclose(layer.weight.grad, (keep / 0.5).expand(3, 5))


def test_mixout_plans():
    plan = parse_plan("mixout(p=0.8)", 4)
    assert plan.train_embeddings and plan.method(3, Mixout) == Mixout(p=0.8)
    assert parse_plan("mixout", 4).method(0, Mixout).p == 0.9
    assert parse_plan(format_plan(plan), 4) == plan
    strata = parse_plan("0-1:frozen,2-3:mixout(p=0.7,targets=attn)", 4)
    assert strata.method(2, Mixout).targets == ("q", "k", "v", "out")
    name = LAYER + "2.fc1.weight"
    assert is_trainable(name, strata) and not is_trainable(LAYER + "0.fc1.weight", strata)
    assert not is_trainable(LAYER + "2.self_attn.q_proj.mixout_target", strata)  # a buffer
    for bad, message in [("mixout(p=1)", "mixout p=1: p must be a number with 0 <= p < 1"),
                         ("0-3:mixout+bitfit", "mixout trains the whole layer"),
                         ("mixout(q=1)", "mixout has no argument 'q'")]:
        with pytest.raises(PlanError, match=message.replace("(", r"\(")):
            parse_plan(bad, 4)
    assert parse_plan("0-3:full,emb:full", 4).method(0, Full)


@pytest.mark.parametrize("kernel", ["sdpa", "fairseq"])
def test_a_mixout_model_mixes_toward_the_weights_it_loads(kernel):
    source = tiny_model("full", num_classes=2, seed=3, attention_kernel=kernel)
    state = source.state_dict()
    model = tiny_model("mixout(p=0.5)", num_classes=2, seed=4, attention_kernel=kernel)
    model.load_state_dict(state, strict=True)  # no mixout_target in it: the loaded weights
    q = "encoder.sentence_encoder.layers.1.self_attn.q_proj."
    assert torch.equal(model.state_dict()[q + "mixout_target"], state[q + "weight"])
    tokens = tiny_batch()
    model.eval()
    assert torch.allclose(logits(model, tokens), logits(source.eval(), tokens), atol=1e-5)
    # in training the projections are called as modules (fairseq's kernel too): the output
    # changes once the weights have moved away from the start
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(LAYER) and name.endswith("proj.weight"):
                p.add_(1.0)
    model.train()
    called = []
    model.encoder.sentence_encoder.layers[1].self_attn.q_proj.register_forward_hook(
        lambda *_: called.append(True))
    logits(model, tokens)
    assert called
    # a checkpoint that holds the targets (a resumed run) keeps them
    saved = model.state_dict()
    saved[q + "mixout_target"] = torch.full_like(saved[q + "mixout_target"], 7.0)
    model.load_state_dict(saved, strict=True)
    assert torch.all(model.state_dict()[q + "mixout_target"] == 7.0)


# ---- Child-Tuning_D ----------------------------------------------------------------

def test_the_child_is_exactly_the_share_with_the_highest_fisher_information():
    fisher = {"a": torch.tensor([[0.5, 0.1], [0.9, 0.0]]), "b": torch.tensor([0.3, 0.8, 0.2])}
    masks = choose_child(fisher, 3 / 7)
    assert masks["a"].tolist() == [[True, False], [True, False]]
    assert masks["b"].tolist() == [False, True, False]
    chosen = torch.cat([fisher[n][masks[n]] for n in fisher])
    left = torch.cat([fisher[n][~masks[n]] for n in fisher])
    assert len(chosen) == 3 and chosen.min() >= left.max()


def test_the_mask_zeroes_gradients_outside_the_child_and_must_fit_the_model():
    model = tiny_model("full", num_classes=2)
    name = LAYER + "0.fc1.weight"
    shape = dict(model.named_parameters())[name].shape
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[0, :3] = True
    apply_mask(model, {name: mask}, "mask.safetensors")
    logits(model, tiny_batch()).sum().backward()
    grad = dict(model.named_parameters())[name].grad
    assert torch.all(grad[~mask] == 0) and torch.any(grad[mask] != 0)
    assert "child_mask" not in "".join(model.state_dict())  # never saved in checkpoints
    with pytest.raises(CheckpointError, match="m.safetensors: a mask for nope, which this model"):
        apply_mask(tiny_model(), {"nope": mask}, "m.safetensors")
    with pytest.raises(CheckpointError, match="the mask of %s has shape" % name):
        apply_mask(tiny_model(), {name: mask.t()}, "m.safetensors")


# ---- end to end on real RTE --------------------------------------------------------

@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("baselines")
    data = prepare_rte(tmp, rows=40)
    checkpoint = stock_checkpoint(data, tmp / "pretrained")
    args = ["--data", data, "--checkpoint", checkpoint, "--total-updates", "6",
            "--batch-size", "8"]
    return {"tmp": tmp, "data": data, "checkpoint": checkpoint, "args": args}


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
def test_mixout_through_ehft_train_mixes_with_the_original_weights(setup, tmp_path):
    ehft("train", "--method", "mixout(p=0.9)", "--save-dir", tmp_path, *setup["args"],
         *FAIRSEQ)
    run = tmp_path / "rte" / "mixout_p=0.9_" / "seed1"
    record = json.loads((run / "run.json").read_text())
    assert record["config"]["stages"] == [{"name": "finetune", "peft": "mixout(p=0.9)",
                                           "lr": 1e-5}]
    original, final = _state(setup["checkpoint"]), _state(run / "finetune" / "checkpoint_last.pt")
    q = LAYER + "0.self_attn.q_proj."
    assert torch.equal(final[q + "mixout_target"], original[q + "weight"])
    assert not torch.equal(final[q + "weight"], original[q + "weight"])
    from ehft_plugin.peft.checkpoints import merged_state

    assert not any(k.endswith("mixout_target") for k in merged_state(final, parse_plan(
        "mixout(p=0.9)", 2)))


@pytest.fixture(scope="module")
def child_run(setup, tmp_path_factory):
    runs = tmp_path_factory.mktemp("child")
    method = ["--method", "child-tuning-d(p=0.2)", "--lr-stage2", "1e-3"]
    ehft("train", *method, "--save-dir", runs, *setup["args"], *FAIRSEQ)
    dry = ehft("train", *method, "--save-dir", runs, *setup["args"], "--dry-run", *FAIRSEQ)
    return runs / "rte" / "child-tuning-d_p=0.2_" / "seed1", dry.stdout


@pytest.mark.slow
def test_child_tuning_updates_only_the_child_of_the_chosen_share(setup, child_run):
    run, _ = child_run
    from ehft_plugin.peft.child_tuning import load_mask

    masks, metadata = load_mask(str(run / "finetune" / "child_mask.safetensors"))
    assert metadata["share"] == "0.2" and metadata["examples"] == "40"
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(0.2 * total)
    assert set(masks) == {n for n in _state(setup["checkpoint"]) if n.startswith(LAYER)}
    original, final = _state(setup["checkpoint"]), _state(run / "finetune" / "checkpoint_last.pt")
    moved = 0
    for name, mask in masks.items():
        before, after = original[name].float(), final[name].float()
        # outside the child only AdamW's decoupled weight decay acts: one factor per tensor
        # (as in Xu et al.'s optimizer); inside it the weights train
        outside = ~mask & (before.abs() > 1e-3)
        if outside.any():
            ratio = after[outside] / before[outside]
            assert torch.allclose(ratio, ratio.mean().expand_as(ratio), atol=1e-5), name
            assert 0.99 < float(ratio.mean()) <= 1.0
        moved += int((~torch.isclose(after[mask], before[mask], rtol=1e-3)).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in masks.values())
    done = json.loads((run / "finetune" / "done.json").read_text())
    assert done["seconds"]["child_mask"] > 0


@pytest.mark.slow
def test_the_child_comes_from_the_fisher_information_of_the_training_data(setup, child_run):
    run, _ = child_run
    from ehft_plugin.peft.child_tuning import load_mask
    from ehft_plugin.train.rebuild import Built

    command = json.loads((run / "run.json").read_text())["commands"]["finetune"]
    at = command.index("--child-tuning-mask")
    built = Built(command[:at] + command[at + 2:], "test", seed=1).load(
        str(setup["checkpoint"]), strict=False)
    torch.manual_seed(1)
    fisher = fisher_information(built.model, built.criterion, built.batches("train", 40, 8))
    masks, _ = load_mask(str(run / "finetune" / "child_mask.safetensors"))
    assert all(f.abs().sum() > 0 for f in fisher.values())
    chosen = torch.cat([fisher[n][masks[n]] for n in masks])
    left = torch.cat([fisher[n][~masks[n]] for n in masks])
    assert chosen.min() >= left.max()  # the highest (Xu et al.), not the lowest


@pytest.mark.slow
def test_the_dry_run_prints_the_child_mask_command_that_writes_the_same_mask(setup, child_run,
                                                                              tmp_path):
    run, dry = child_run
    [line] = [x for x in dry.splitlines() if x.startswith("ehft child-mask")]
    args = shlex.split(line)[1:]
    args[args.index("--out") + 1] = str(tmp_path / "mask.safetensors")
    # the stage starts from the original without its head, which ehft train wrote and removed
    # when the stage finished; the mask sees the backbone only, the same in both
    start = args.index("--finetune-from-model") + 1
    assert args[start] == str(run / "finetune" / "start.pt")
    args[start] = str(setup["checkpoint"])
    result = ehft(*args)
    assert json.loads(result.stdout) == {"out": str(tmp_path / "mask.safetensors"),
                                         "share": 0.2, "examples": 40}
    from ehft_plugin.peft.child_tuning import load_mask

    ours, _ = load_mask(str(tmp_path / "mask.safetensors"))
    theirs, _ = load_mask(str(run / "finetune" / "child_mask.safetensors"))
    assert all(torch.equal(ours[n], theirs[n]) for n in theirs)


@pytest.mark.slow
def test_child_tuning_bad_input_is_one_line(setup, tmp_path):
    base = ["--out", tmp_path / "m.safetensors", "--", setup["data"], "--user-dir",
            REPO / "ehft_plugin", "--task", "glue_ehft", "--arch", "roberta_ehft_base"]
    result = ehft("child-mask", "--share", "0", *base, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "ehft child-mask: error: child-tuning share p=0.0: expected 0 < p <= 1")
    result = ehft("child-mask", "--share", "0.2", *base, check=False)
    assert result.returncode == 2 and "name no --finetune-from-model" in result.stderr
    result = ehft("train", "--method", "child-tuning-d(p=2)", "--save-dir", tmp_path,
                  *setup["args"], *FAIRSEQ, check=False)
    assert result.returncode == 2 and "p must be a number with 0 < p <= 1" in result.stderr
    # a mask of another model, under fairseq-train
    from ehft_plugin.peft.child_tuning import save_mask

    save_mask({LAYER + "0.fc1.weight": torch.ones(3, 3, dtype=torch.bool)},
              str(tmp_path / "other.safetensors"), 0.5, 10)
    result, _ = fairseq_train(setup["data"], tmp_path / "ck", "--arch", "roberta_ehft_base",
                              "--child-tuning-mask", tmp_path / "other.safetensors",
                              updates=1, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("fairseq-train: error: ")
    assert "the mask of %s0.fc1.weight has shape (3, 3)" % LAYER in result.stderr
