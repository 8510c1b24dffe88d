"""Every PEFT method end to end with fairseq-train on real RTE, restoring stock checkpoints."""

import pytest
import torch
import conftest
from conftest import fairseq_train, prepare_rte

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes




@pytest.fixture(scope="module")
def rte_bin(tmp_path_factory):
    return prepare_rte(tmp_path_factory.mktemp("rte"), rows=40)


@pytest.fixture(scope="module")
def stock_checkpoint(rte_bin, tmp_path_factory):
    return conftest.stock_checkpoint(rte_bin, tmp_path_factory.mktemp("stock"))


def _state(path):
    return torch.load(path, weights_only=False)


@pytest.mark.parametrize("peft", ["bitfit", "lora", "prefix", "head", "topk-1", "spafit-1-1-I",
                                  "0:frozen,1:lora(r=4,targets=q+k+v+out)+bitfit(ffn)"])
def test_each_method_trains_from_a_stock_checkpoint_and_moves_only_its_parameters(
        rte_bin, stock_checkpoint, tmp_path, peft):
    result, records = fairseq_train(
        rte_bin, tmp_path / "ck", "--arch", "roberta_ehft_base", "--peft", peft,
        "--restore-file", stock_checkpoint, "--reset-optimizer", "--reset-dataloader",
        "--reset-meters", "--reset-lr-scheduler", updates=3)
    log = result.stdout + result.stderr
    assert "Loaded checkpoint %s" % stock_checkpoint in log
    assert "trainable parameters:" in log
    assert "valid_accuracy" in records[-1]

    from ehft_plugin.peft.plan import parse_plan
    from ehft_plugin.peft.trainable import is_trainable

    start, end = _state(stock_checkpoint)["model"], _state(tmp_path / "ck" / "checkpoint_last.pt")
    plan = parse_plan(peft, 2)
    for name, value in end["model"].items():
        if name in start and not is_trainable(name, plan):
            assert torch.equal(value, start[name]), "%s moved under --peft %s" % (name, peft)
    # Adam state exists for trainable parameters only
    trainable = [n for n in end["model"] if is_trainable(n, plan)]
    assert len(end["last_optimizer_state"]["state"]) == len(trainable)


def test_a_head_of_another_size_is_an_error_unless_reset(rte_bin, stock_checkpoint, tmp_path):
    common = ["--arch", "roberta_ehft_base", "--peft", "bitfit", "--head-type", "ehft",
              "--restore-file", stock_checkpoint, "--reset-optimizer", "--reset-dataloader",
              "--reset-meters"]
    result, _ = fairseq_train(rte_bin, tmp_path / "a", *common, updates=1, check=False)
    assert result.returncode != 0
    assert "the checkpoint's head 'sentence_classification_head' has out_proj (2, 16)" \
        in result.stderr
    assert "--reset-classification-heads" in result.stderr
    result, records = fairseq_train(rte_bin, tmp_path / "b", *common,
                                    "--reset-classification-heads", updates=1)
    assert "valid_accuracy" in records[-1]


def test_a_bad_plan_stops_fairseq_train_with_the_message(rte_bin, tmp_path):
    result, _ = fairseq_train(rte_bin, tmp_path / "ck", "--arch", "roberta_ehft_base",
                              "--peft", "0:frozen", updates=1, check=False)
    assert result.returncode != 0
    assert "layer 1 has no method; every layer 0-1 needs one" in result.stderr


@pytest.mark.parametrize("heads", ["none", "other"])
def test_checkpoints_without_or_with_other_heads_load(rte_bin, stock_checkpoint, tmp_path, heads):
    state = _state(stock_checkpoint)
    for key in [k for k in state["model"] if k.startswith("classification_heads.")]:
        value = state["model"].pop(key)
        if heads == "other":
            state["model"][key.replace("sentence_classification_head", "mnli")] = value
    torch.save(state, tmp_path / "model.pt")
    result, records = fairseq_train(
        rte_bin, tmp_path / "ck", "--arch", "roberta_ehft_base", "--peft", "lora",
        "--restore-file", tmp_path / "model.pt", "--reset-optimizer", "--reset-dataloader",
        "--reset-meters", updates=1)
    assert "Loaded checkpoint" in result.stdout + result.stderr
    assert "valid_accuracy" in records[-1]
