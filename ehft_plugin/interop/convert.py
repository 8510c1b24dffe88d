"""`ehft convert`: an HF encoder folder (BERT or RoBERTa family) -> a fairseq RoBERTa backbone.

Writes OUT/model.pt (a fairseq checkpoint for `--arch roberta_ehft_base` with the model's
sizes), OUT/dict.txt, the tokeniser's files and OUT/ehft_backbone.json, which
`ehft prepare --backbone OUT` reads so that the data gets the right tokeniser, dictionary and
input format.

What differs between HF BERT and fairseq's RoBERTa, and how it is mapped:
- Dictionary: fairseq puts <s> <pad> </s> <unk> at ids 0-3 and RoBERTa's task appends
  <mask>; BERT's [CLS] [PAD] [SEP] [UNK] [MASK] become those, every other WordPiece keeps its
  relative order in dict.txt, and the embedding rows are permuted to match.
- Positions: fairseq numbers positions from padding_idx + 1 (= 2), so BERT's position p is
  row p + 2; rows 0 and 1 are never looked up and are zero.
- Token types: fairseq has none. Type 0's embedding is added to every position row, which is
  exact for single segments; second segments also get type 0 (BERT gave them type 1), a
  shift finetuning absorbs.
- Pair format: BERT reads `[CLS] A [SEP] B [SEP]` (RoBERTa: `<s> A </s> </s> B </s>`);
  ehft_backbone.json says "pair_format": "bert" and glue_ehft then joins segments BERT's way.
- LayerNorm eps: BERT's (1e-12) is recorded as `layer_norm_eps` and set by roberta_ehft
  (fairseq's default is 1e-5). GELU: both use the exact erf form ("gelu").
- Pooler: dropped. EH-FT compares a new (random) head with a stage-1 head; a head
  initialised from a pooler would blur that, and sentence-embedding models never trained it.
- fairseq's masked-LM head is not used by finetuning but must exist in the checkpoint: it
  is taken from BERT's cls.predictions when present, otherwise freshly initialised (seed 0).

HF RoBERTa checkpoints were converted from fairseq in the first place, so less differs:
token ids are fairseq's dictionary ids already (no permutation; vocab.json maps BPE tokens to
them), positions already start at padding_idx + 1, and the single token-type row is folded
into the positions. The tokeniser becomes fairseq's GPT-2 BPE with vocab.json as its
encoder.json (it then yields the dictionary ids themselves), merges.txt as vocab.bpe and a
dict.txt listing those ids in order.
"""

import json
import os
import shutil

from ..atomic import atomic_dir
from ..data.backbones import BACKBONE_FORMAT, ConvertError, load_backbone
from .hf_names import FAIRSEQ_SPECIALS, LAYER_MAP

SUPPORTED = {"bert": ("BertModel", "BertForMaskedLM", "BertForPreTraining"),
             "roberta": ("RobertaModel", "RobertaForMaskedLM")}
PADDING_IDX = 1


def _read_config(hf_dir):
    """(config, family) of an HF folder."""
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isdir(hf_dir):
        raise ConvertError("%s: no such directory" % hf_dir)
    if not os.path.isfile(path):
        raise ConvertError("%s: config.json not found; expected an HF model folder with "
                           "config.json, model.safetensors (or pytorch_model.bin) and the "
                           "tokeniser files (vocab.txt, or vocab.json + merges.txt)" % hf_dir)
    with open(path) as f:
        config = json.load(f)
    family, archs = config.get("model_type"), config.get("architectures") or []
    if family not in SUPPORTED or not set(archs) & set(SUPPORTED[family]):
        raise ConvertError("%s: model_type %r, architectures %s is not supported; supported: "
                           "model_type 'bert' with %s (BERT, MiniLM and other BertModel "
                           "checkpoints) and model_type 'roberta' with %s"
                           % (path, family, archs, ", ".join(SUPPORTED["bert"]),
                              ", ".join(SUPPORTED["roberta"])))
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ConvertError("%s: position_embedding_type %r is not supported (absolute only)"
                           % (path, config["position_embedding_type"]))
    if config.get("hidden_act", "gelu") != "gelu":
        raise ConvertError("%s: hidden_act %r is not supported (gelu only)"
                           % (path, config["hidden_act"]))
    return config, family


def _read_weights(hf_dir):
    import torch

    safetensors = os.path.join(hf_dir, "model.safetensors")
    pickled = os.path.join(hf_dir, "pytorch_model.bin")
    if os.path.isfile(safetensors):
        from safetensors.torch import load_file
        state = load_file(safetensors)
    elif os.path.isfile(pickled):
        state = torch.load(pickled, map_location="cpu", weights_only=True)
    else:
        raise ConvertError("%s: neither model.safetensors nor pytorch_model.bin found" % hf_dir)
    # BertForPreTraining, RobertaForMaskedLM & co. prefix the encoder with "bert."/"roberta."
    return {k.split(".", 1)[1] if k.startswith(("bert.", "roberta.")) else k: v
            for k, v in state.items()}


def _read_vocab(hf_dir):
    path = os.path.join(hf_dir, "vocab.txt")
    if not os.path.isfile(path):
        raise ConvertError("%s: vocab.txt (WordPiece vocabulary) not found" % hf_dir)
    with open(path, encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    missing = [t for t in FAIRSEQ_SPECIALS + ("[MASK]",) if t not in vocab]
    if missing:
        raise ConvertError("%s: lacks the special tokens %s" % (path, ", ".join(missing)))
    return vocab


def _read_bpe_vocab(hf_dir):
    """vocab.json of an HF RoBERTa: {BPE token: id}, ids being fairseq's dictionary ids."""
    path, merges = os.path.join(hf_dir, "vocab.json"), os.path.join(hf_dir, "merges.txt")
    for f in (path, merges):
        if not os.path.isfile(f):
            raise ConvertError("%s: %s not found (RoBERTa's byte-level BPE needs vocab.json "
                               "and merges.txt)" % (hf_dir, os.path.basename(f)))
    with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
    ids = sorted(vocab.values())
    specials = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": len(ids) - 1}
    if ids != list(range(len(ids))) or any(vocab.get(t) != i for t, i in specials.items()):
        raise ConvertError("%s: expected ids 0..N-1 with <s> <pad> </s> <unk> at 0-3 and <mask> "
                           "last (fairseq's dictionary order)" % path)
    return vocab


def fairseq_order(vocab):
    """BERT ids in fairseq dictionary order: specials, the other tokens, [MASK] last."""
    index = {t: i for i, t in enumerate(vocab)}
    skip = set(FAIRSEQ_SPECIALS) | {"[MASK]"}
    return ([index[t] for t in FAIRSEQ_SPECIALS] + [i for i, t in enumerate(vocab)
                                                    if t not in skip] + [index["[MASK]"]])


def _tensor(state, key, path):
    if key not in state:
        raise ConvertError("%s: weight %s not found" % (path, key))
    return state[key]


def convert_state(config, hf_state, vocab, source="the HF model", family="bert"):
    """(fairseq model state, model args) of an HF BERT or RoBERTa state dict; `vocab` is
    vocab.txt's token list (BERT) or vocab.json's mapping (RoBERTa)."""
    import torch

    get = lambda key: _tensor(hf_state, key, source)  # noqa: E731
    order = torch.tensor(fairseq_order(vocab) if family == "bert" else range(len(vocab)))
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    words = get("embeddings.word_embeddings.weight")
    if words.shape[0] != len(vocab):
        raise ConvertError("%s: %d word embeddings but the vocabulary has %d tokens"
                           % (source, words.shape[0], len(vocab)))
    embed_tokens = words[order].clone()
    hf_positions = get("embeddings.position_embeddings.weight")
    token_type = hf_state.get("embeddings.token_type_embeddings.weight")
    type0 = token_type[0] if token_type is not None else 0
    if family == "bert":  # BERT's position p is fairseq's row p + 2
        positions = torch.zeros(hf_positions.shape[0] + PADDING_IDX + 1, hidden,
                                dtype=hf_positions.dtype)
        positions[PADDING_IDX + 1:] = hf_positions + type0
    else:  # HF RoBERTa kept fairseq's numbering
        positions = hf_positions + type0
    prefix = "encoder.sentence_encoder."
    out = {prefix + "embed_tokens.weight": embed_tokens,
           prefix + "embed_positions.weight": positions,
           prefix + "layernorm_embedding.weight": get("embeddings.LayerNorm.weight"),
           prefix + "layernorm_embedding.bias": get("embeddings.LayerNorm.bias")}
    for i in range(layers):
        for hf_name, fs_name in LAYER_MAP.items():
            for param in ("weight", "bias"):
                out["%slayers.%d.%s.%s" % (prefix, i, fs_name, param)] = get(
                    "encoder.layer.%d.%s.%s" % (i, hf_name, param))
    out.update(_lm_head(hf_state, hidden, embed_tokens, order))
    args = {
        "arch": "roberta_ehft_base", "encoder_layers": layers, "encoder_embed_dim": hidden,
        "encoder_ffn_embed_dim": config["intermediate_size"],
        "encoder_attention_heads": config["num_attention_heads"],
        "max_positions": positions.shape[0] - PADDING_IDX - 1, "activation_fn": "gelu",
        "layer_norm_eps": config.get("layer_norm_eps", 1e-12),
        "dropout": config.get("hidden_dropout_prob", 0.1),
        "attention_dropout": config.get("attention_probs_dropout_prob", 0.1),
    }
    return {k: v.contiguous() for k, v in out.items()}, args


def _lm_head(hf_state, hidden, embed_tokens, order):
    import torch

    head = "encoder.lm_head."
    if "cls.predictions.transform.dense.weight" in hf_state:
        t = "cls.predictions.transform."
        return {head + "dense.weight": hf_state[t + "dense.weight"],
                head + "dense.bias": hf_state[t + "dense.bias"],
                head + "layer_norm.weight": hf_state[t + "LayerNorm.weight"],
                head + "layer_norm.bias": hf_state[t + "LayerNorm.bias"],
                head + "weight": embed_tokens,
                head + "bias": hf_state["cls.predictions.bias"][order].clone()}
    if "lm_head.dense.weight" in hf_state:  # RobertaForMaskedLM
        return {head + name: hf_state["lm_head." + name]
                for name in ("dense.weight", "dense.bias", "layer_norm.weight",
                             "layer_norm.bias", "bias")} | {head + "weight": embed_tokens}
    g = torch.Generator().manual_seed(0)
    return {head + "dense.weight": torch.randn(hidden, hidden, generator=g) * 0.02,
            head + "dense.bias": torch.zeros(hidden),
            head + "layer_norm.weight": torch.ones(hidden),
            head + "layer_norm.bias": torch.zeros(hidden),
            head + "weight": embed_tokens,
            head + "bias": torch.zeros(embed_tokens.shape[0])}


def checkpoint(model_state, args):
    """A fairseq checkpoint with a plain-container configuration (no pickled classes). Its
    task and BPE are what fairseq's hub needs to load the folder as it loads a released
    `roberta.base`: the masked-LM task reads dict.txt from the folder (fairseq's hub sets
    `data` to it), and the `ehft_backbone` BPE the folder's own tokeniser files."""
    return {"cfg": {"model": dict(args, _name=args["arch"]), "common": {},
                    "task": {"_name": "masked_lm", "data": "."},
                    "bpe": {"_name": "ehft_backbone", "data": "."}, "tokenizer": None},
            "args": None, "model": model_state,
            "optimizer_history": [{"criterion_name": "SentencePredictionCriterion",
                                   "optimizer_name": "converted", "lr_scheduler_state": {},
                                   "num_updates": 0}],
            "extra_state": {}, "last_optimizer_state": None}


def convert(hf_dir, out_dir, force=False):
    """Convert `hf_dir` into `out_dir` (written atomically); returns the backbone record."""
    import torch

    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not force:
        raise ConvertError("%s already exists; pass --force to replace it" % out_dir)
    config, family = _read_config(hf_dir)
    vocab = _read_vocab(hf_dir) if family == "bert" else _read_bpe_vocab(hf_dir)
    state, args = convert_state(config, _read_weights(hf_dir), vocab, hf_dir, family)
    if family == "bert":
        tokenizer = {"bpe": "bert", "bpe_vocab_file": "vocab.txt",
                     "bpe_cased": not _lower_case(hf_dir), "srcdict": "dict.txt"}
    else:
        tokenizer = {"bpe": "gpt2", "gpt2_encoder_json": "encoder.json",
                     "gpt2_vocab_bpe": "vocab.bpe", "srcdict": "dict.txt"}
    record = {"format": BACKBONE_FORMAT, "source": os.path.abspath(hf_dir), "family": family,
              "pair_format": family, "model": args, "tokenizer": tokenizer}
    with atomic_dir(out_dir) as tmp:
        _write_tokeniser(hf_dir, tmp, family, vocab)
        torch.save(checkpoint(state, args), os.path.join(tmp, "model.pt"))
        with open(os.path.join(tmp, "ehft_backbone.json"), "w") as f:
            json.dump(record, f, indent=2)
    return record


def _write_tokeniser(hf_dir, out, family, vocab):
    """dict.txt and the tokeniser files `prepare --backbone` reads. fairseq's ids 0-3 are its
    own specials and RoBERTa's task appends <mask>, so dict.txt lists everything between."""
    if family == "bert":
        order = fairseq_order(vocab)
        with open(os.path.join(out, "dict.txt"), "w", encoding="utf-8") as f:
            f.writelines("%s 1\n" % vocab[i] for i in order[4:-1])
        shutil.copyfile(os.path.join(hf_dir, "vocab.txt"), os.path.join(out, "vocab.txt"))
        return
    # the GPT-2 encoder with vocab.json as encoder.json yields the dictionary ids themselves
    with open(os.path.join(out, "dict.txt"), "w") as f:
        f.writelines("%d 1\n" % i for i in range(4, len(vocab) - 1))
    shutil.copyfile(os.path.join(hf_dir, "vocab.json"), os.path.join(out, "encoder.json"))
    with open(os.path.join(hf_dir, "merges.txt"), encoding="utf-8") as f:
        merges = [line for line in f.read().split("\n") if line]
    if not merges or not merges[0].startswith("#version"):
        merges.insert(0, "#version: 0.2")  # fairseq skips the first line and the last one
    with open(os.path.join(out, "vocab.bpe"), "w", encoding="utf-8") as f:
        f.write("\n".join(merges) + "\n")


def _lower_case(hf_dir):
    path = os.path.join(hf_dir, "tokenizer_config.json")
    if os.path.isfile(path):
        with open(path) as f:
            return bool(json.load(f).get("do_lower_case", True))
    return True


def build_model(path, dictionary=None):
    """The fairseq model (`--arch roberta_ehft_base`, plan `full`) of a converted backbone
    directory, weights loaded strictly, in eval mode: for checks and feature extraction."""
    from argparse import Namespace

    import torch

    from ..data.tokenisers import load_dictionary
    from ..models.roberta_ehft import RobertaEhftModel, roberta_ehft_base

    record = load_backbone(path)
    if dictionary is None:
        dictionary = load_dictionary(record["tokenizer"]["srcdict"])
    args = Namespace(**record["model"])
    roberta_ehft_base(args)
    task = Namespace(source_dictionary=dictionary, target_dictionary=dictionary)
    model = RobertaEhftModel.build_model(args, task)
    state = torch.load(record["checkpoint"], map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"], strict=True)
    return model.eval()
