"""Adapter files (only what the plan trained, safetensors) and merged exports that stock
fairseq loads without the plugin and that predict the same."""

import json
import os

import pytest
import torch
from conftest import BIN, ehft, fairseq_train, prepare_rte, run

from ehft_plugin.peft.checkpoints import load_adapter
from ehft_plugin.errors import CheckpointError
from ehft_plugin.peft.plan import format_plan


@pytest.fixture(scope="module")
def rte_bin(tmp_path_factory):
    return prepare_rte(tmp_path_factory.mktemp("rte"), rows=24)


def _train(data, save_dir, peft, head_type="ehft"):
    fairseq_train(data, save_dir, "--arch", "roberta_ehft_base", "--peft", peft,
                  "--head-type", head_type, "--lr", "1e-2", updates=3)
    return save_dir / "checkpoint_last.pt"


@pytest.mark.slow
def test_adapter_file_holds_only_what_the_plan_trained(rte_bin, tmp_path):
    peft = "0:frozen,1:lora(r=4,targets=q+k+v+out)+bitfit(ffn)"
    checkpoint = _train(rte_bin, tmp_path / "ck", peft)
    out = tmp_path / "adapter.safetensors"
    ehft("export-adapter", "--checkpoint", checkpoint, "--out", out)
    tensors, plan, metadata = load_adapter(str(out))
    assert format_plan(plan) == "0:frozen,1:lora(r=4,alpha=16,dropout=0,targets=attn)" \
                                "+bitfit(targets=ffn)"
    assert metadata["head_type"] == "ehft"
    layer1 = "encoder.sentence_encoder.layers.1."
    expected = {layer1 + "self_attn.%s_proj.lora_%s" % (t, ab) for t in "qkv" for ab in "AB"}
    expected |= {layer1 + "self_attn.out_proj.lora_A", layer1 + "self_attn.out_proj.lora_B",
                 layer1 + "fc1.bias", layer1 + "fc2.bias", layer1 + "final_layer_norm.bias"}
    expected |= {"classification_heads.sentence_classification_head.%s.%s" % (m, p)
                 for m in ("dense", "out_proj") for p in ("weight", "bias")}
    assert set(tensors) == expected  # no backbone weight, no embeddings
    saved = torch.load(checkpoint, weights_only=False)["model"]
    for name, tensor in tensors.items():
        assert torch.equal(tensor, saved[name])
    assert os.path.getsize(out) < os.path.getsize(checkpoint) / 5


def test_a_corrupt_adapter_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "adapter.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match=r"adapter.safetensors: not a readable safetensors"):
        load_adapter(str(bad))


PREDICT = """
import json, sys, torch
from fairseq.models.roberta import RobertaModel
hub = RobertaModel.from_pretrained(sys.argv[1], sys.argv[2], data_name_or_path=sys.argv[3],
                                   bpe=None).eval()
tokens = torch.tensor([[0, 713, 16, 10, 1296, 4, 2, 2, 243, 16, 4, 2]])
logits = hub.predict("sentence_classification_head", tokens, return_logits=True)
print(json.dumps({"logits": logits.tolist(),
                  "plugin": any(m.startswith("ehft_plugin") for m in sys.modules)}))
"""


def _predict(directory, checkpoint, data, plugin):
    code = ("import ehft_plugin\n" if plugin else "") + PREDICT
    result = run([BIN / "python", "-c", code, directory, checkpoint, data])
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("peft,head_type", [("0-1:lora(r=4,targets=all)+bitfit", "ehft"),
                                            ("lora", "fairseq"), ("bitfit", "ehft")])
def test_merged_export_loads_in_stock_fairseq_and_predicts_the_same(rte_bin, tmp_path, peft,
                                                                   head_type):
    checkpoint = _train(rte_bin, tmp_path / "ck", peft, head_type)
    ehft("export-merged", "--checkpoint", checkpoint, "--out", tmp_path / "merged")
    stock = _predict(tmp_path / "merged", "model.pt", tmp_path / "merged", plugin=False)
    assert stock["plugin"] is False  # loaded without the plugin
    ours = _predict(tmp_path / "ck", "checkpoint_last.pt", rte_bin, plugin=True)
    torch.testing.assert_close(torch.tensor(stock["logits"]), torch.tensor(ours["logits"]),
                               rtol=0, atol=1e-5)


@pytest.mark.slow
def test_prefix_cannot_be_merged_and_says_so(rte_bin, tmp_path):
    checkpoint = _train(rte_bin, tmp_path / "ck", "prefix")
    result = ehft("export-merged", "--checkpoint", checkpoint, "--out", tmp_path / "m",
                  check=False)
    assert result.returncode == 2
    assert "prefix-tuning parameters cannot be merged into the weights" in result.stderr
    assert not (tmp_path / "m" / "model.pt").exists()


@pytest.mark.slow
def test_export_refuses_a_checkpoint_without_a_plan(rte_bin, tmp_path):
    fairseq_train(rte_bin, tmp_path / "ck", updates=1)  # --arch roberta_base: no --peft
    result = ehft("export-adapter", "--checkpoint", tmp_path / "ck" / "checkpoint_last.pt",
                  "--out", tmp_path / "a.safetensors", check=False)
    assert result.returncode == 2 and "no --peft plan" in result.stderr


