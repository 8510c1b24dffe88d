"""`ehft export-hf` and `ehft export-peft`: a finetuned classifier as folders that HF
transformers and HF PEFT load with no code from this project.

export-hf writes `RobertaForSequenceClassification` (RoBERTa backbones, GPT-2 BPE) or
`BertForSequenceClassification` (backbones `ehft convert` made from BERT-family models):
config.json with the label names, model.safetensors, and the tokeniser files the backbone was
trained with. LoRA is folded into the weights; BitFit and full layers are plain weights.

The mapping is exact, not approximate:
- fairseq's head (`--head-type fairseq`: dense H->H, tanh, out_proj) is RoBERTa's
  `classifier` (dense, out_proj) and BERT's `pooler.dense` + `classifier`.
- RoBERTa keeps fairseq's dictionary ids and position rows (HF RoBERTa counts positions from
  padding_idx + 1 as fairseq does). For BERT the vocabulary is written in fairseq's order
  (its specials at fairseq's ids 0-3, [MASK] last), so the embedding rows need no
  permutation; BERT's position p is fairseq's row p + 2; the token-type rows are zero, since
  `ehft convert` folded type 0 into the positions and fairseq gives second segments no type.

The EH-FT head (`--head-type ehft`, H -> 2048 -> classes with ReLU) has no transformers class
(every HF sequence-classification head is H -> H with tanh): export-hf writes it as
transformers' RoBERTa or BERT classifier with that head in place of theirs, defined in a
`modeling_ehft.py` beside the weights (hf_modeling_ehft.py, copied) that `config.json`'s
`auto_map` names, so `from_pretrained(DIR, trust_remote_code=True)` loads it. fairseq's head
needs no remote code.

What transformers cannot express is refused, with the reason: prefix-tuning (not a weight of
the model), ranking tasks (COPA's choices are scored one by one), sentencepiece tokenisers;
export-peft only for transformers' own heads.

export-peft writes a uniform LoRA plan as a PEFT adapter (adapter_config.json,
adapter_model.safetensors, the head in `modules_to_save`) and, unless given one, the HF export
of the frozen base it applies to.

Longer than ~300 lines because export-hf and export-peft write the same backbone, head and
tokeniser through the same name maps; apart, they would share a dozen private helpers.
"""

import json
import os
import re
from dataclasses import dataclass

from ..atomic import atomic_dir
from ..errors import CheckpointError
from ..peft.plan import LORA_TARGETS, BitFit, Frozen, Full, Prefix, format_plan, parse_plan
from ..peft.trainable import MODULE_TARGETS
from .hf_names import LAYER_MAP

_FAIRSEQ_TO_HF = {fs: hf for hf, fs in LAYER_MAP.items()}  # self_attn.q_proj -> attention.self.query
# LoRA target name (q, k, ..., fc2) -> HF module, through the fairseq module it names
_LORA_TO_HF = {target: _FAIRSEQ_TO_HF[module] for module, target in MODULE_TARGETS.items()
               if target in LORA_TARGETS}
_ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "relu": "relu"}
_ENC = "encoder.sentence_encoder."
BERT_SPECIALS = ("[CLS]", "[PAD]", "[SEP]", "[UNK]")  # fairseq's <s> <pad> </s> <unk>


@dataclass
class Finetuned:
    """A checkpoint trained with --task glue_ehft --arch roberta_ehft_*, read for export."""
    path: str
    state: dict  # the model's parameters
    args: object  # the model's configuration
    plan: object
    head: str  # classification head name
    meta: dict  # the data's ehft_task.json
    data: str
    family: str  # roberta or bert


def _get(obj, key, default=None):
    return obj.get(key, default) if isinstance(obj, dict) else getattr(obj, key, default)


def read_finetuned(path, data=None) -> Finetuned:
    from ..peft.checkpoints import load_checkpoint
    from ..data.binarize import load_metadata

    state = load_checkpoint(path)
    cfg = state["cfg"]
    args = cfg["model"]
    head = _get(cfg["task"], "classification_head_name") or "sentence_classification_head"
    if "classification_heads.%s.out_proj.weight" % head not in state["model"]:
        raise CheckpointError("%s has no classification head %r: export-hf and export-peft "
                              "export a finetuned classifier (a pretrained backbone has no "
                              "head; train one with ehft train)" % (path, head))
    if _get(args, "peft") is None:
        raise CheckpointError("%s was not trained with --arch roberta_ehft_* (no --peft plan)"
                              % path)
    data = data or _get(cfg["task"], "data")
    if not data or not os.path.isfile(os.path.join(data, "ehft_task.json")):
        raise CheckpointError("%s: its data directory %r has no ehft_task.json; pass --data "
                              "with the directory `ehft prepare` wrote for it" % (path, data))
    meta = load_metadata(data)
    if meta["kind"] == "ranking":
        raise CheckpointError("%s: %s is a ranking task (each answer choice is scored on its "
                              "own); transformers' sequence classifiers have no equivalent"
                              % (path, meta["task"]))
    bpe = meta["tokenizer"]["bpe"]
    family = {("gpt2", "roberta"): "roberta", ("bert", "bert"): "bert"}.get(
        (bpe, meta.get("pair_format", "roberta")))
    if family is None:
        raise CheckpointError("%s: data tokenised with --bpe %s and %s pair format; exports "
                              "support GPT-2 BPE with RoBERTa's format and the WordPiece of "
                              "backbones converted from BERT" % (path, bpe, meta.get("pair_format")))
    plan = parse_plan(_get(args, "peft"), _get(args, "encoder_layers"))
    return Finetuned(path, state["model"], args, plan, head, meta, data, family)


MODELING_FILE = "modeling_ehft.py"


def ehft_head(ft):
    """Whether the checkpoint has the EH-FT head (hidden -> inner -> classes, ReLU)."""
    return _get(ft.args, "head_type") == "ehft"


def _check_head(ft, remote_code=True):
    """`remote_code`: the EH-FT head may be exported (with modeling_ehft.py)."""
    if ehft_head(ft):
        if remote_code:
            return
        inner = ft.state["classification_heads.%s.dense.weight" % ft.head].shape[0]
        raise CheckpointError(
            "%s has the EH-FT head (hidden -> %d -> classes, ReLU), which no transformers class "
            "computes, and a PEFT adapter applies to one of transformers' own classes; export "
            "it with export-hf (loaded with trust_remote_code=True), or train with --head-type "
            "fairseq, which maps onto HF's head exactly" % (ft.path, inner))
    activation = _get(ft.args, "pooler_activation_fn", "tanh")
    if activation != "tanh":
        raise CheckpointError("%s: the head's activation is %s; HF's heads use tanh"
                              % (ft.path, activation))


def _hf_activation(ft):
    name = _get(ft.args, "activation_fn", "gelu")
    if name not in _ACTIVATIONS:
        raise CheckpointError("%s: --activation-fn %s has no HF equivalent here (supported: %s)"
                              % (ft.path, name, ", ".join(_ACTIVATIONS)))
    return _ACTIVATIONS[name]


def backbone_state(model_state, family):
    """HF encoder parameters (without the `roberta.`/`bert.` prefix) of a fairseq state."""
    import torch

    positions = model_state[_ENC + "embed_positions.weight"]
    hidden = positions.shape[1]
    out = {"embeddings.word_embeddings.weight": model_state[_ENC + "embed_tokens.weight"],
           "embeddings.LayerNorm.weight": model_state[_ENC + "layernorm_embedding.weight"],
           "embeddings.LayerNorm.bias": model_state[_ENC + "layernorm_embedding.bias"]}
    if family == "bert":  # BERT's position p is fairseq's row p + 2
        out["embeddings.position_embeddings.weight"] = positions[2:]
        out["embeddings.token_type_embeddings.weight"] = torch.zeros(2, hidden)
    else:
        out["embeddings.position_embeddings.weight"] = positions
        out["embeddings.token_type_embeddings.weight"] = torch.zeros(1, hidden)
    layer = re.compile(re.escape(_ENC) + r"layers\.(\d+)\.(.+)\.(weight|bias)$")
    for key, tensor in model_state.items():
        match = layer.match(key)
        if match and match.group(2) in _FAIRSEQ_TO_HF:
            out["encoder.layer.%s.%s.%s" % (match.group(1), _FAIRSEQ_TO_HF[match.group(2)],
                                            match.group(3))] = tensor
    return out


def head_state(model_state, head, family, ehft=False):
    """The HF head's parameters: RoBERTa's classifier, or BERT's pooler + classifier; the
    EH-FT head (`ehft`) is modeling_ehft's classifier for both."""
    h = "classification_heads.%s." % head
    names = ({"dense": "classifier.dense", "out_proj": "classifier.out_proj"}
             if family == "roberta" or ehft else
             {"dense": "bert.pooler.dense", "out_proj": "classifier"})
    return {"%s.%s" % (names[m], p): model_state[h + "%s.%s" % (m, p)]
            for m in ("dense", "out_proj") for p in ("weight", "bias")}


def label_names(ft):
    if ft.meta["kind"] == "regression":
        return ["score"]
    with open(os.path.join(ft.data, "label", "dict.txt"), encoding="utf-8") as f:
        return [line.rsplit(" ", 1)[0] for line in f.read().splitlines() if line.strip()]


def hf_config(ft):
    state = ft.state
    embed = state[_ENC + "embed_tokens.weight"]
    positions = state[_ENC + "embed_positions.weight"].shape[0]
    labels = label_names(ft)
    config = {
        "architectures": ["RobertaForSequenceClassification" if ft.family == "roberta"
                          else "BertForSequenceClassification"],
        "model_type": ft.family,
        "vocab_size": embed.shape[0], "hidden_size": embed.shape[1],
        "num_hidden_layers": _get(ft.args, "encoder_layers"),
        "num_attention_heads": _get(ft.args, "encoder_attention_heads"),
        "intermediate_size": _get(ft.args, "encoder_ffn_embed_dim"),
        "hidden_act": _hf_activation(ft),
        "hidden_dropout_prob": _get(ft.args, "dropout", 0.1),
        "attention_probs_dropout_prob": _get(ft.args, "attention_dropout", 0.1),
        "classifier_dropout": _get(ft.args, "pooler_dropout", 0.0),
        "layer_norm_eps": _get(ft.args, "layer_norm_eps", None) or 1e-5,
        "initializer_range": 0.02, "pad_token_id": 1,
        "id2label": {str(i): name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
        "problem_type": "regression" if ft.meta["kind"] == "regression"
                        else "single_label_classification",
        "torch_dtype": "float32",
    }
    if ft.family == "roberta":
        config.update(max_position_embeddings=positions, type_vocab_size=1, bos_token_id=0,
                      eos_token_id=2)
    else:
        config.update(max_position_embeddings=positions - 2, type_vocab_size=2)
    if ehft_head(ft):
        family = "Roberta" if ft.family == "roberta" else "Bert"
        module = MODELING_FILE[:-len(".py")]
        config.update(
            architectures=["Ehft%sForSequenceClassification" % family],
            model_type="ehft_" + ft.family,
            auto_map={"AutoConfig": "%s.Ehft%sConfig" % (module, family),
                      "AutoModelForSequenceClassification":
                          "%s.Ehft%sForSequenceClassification" % (module, family)},
            ehft_head_inner_dim=int(state["classification_heads.%s.dense.weight"
                                          % ft.head].shape[0]),
            ehft_head_activation="relu")
    return config


# ---- tokeniser files -------------------------------------------------------------------

def _tokenizer_spec(ft):
    from ..data.tokenisers import TokeniserSpec

    return TokeniserSpec(**ft.meta["tokenizer"]).resolved(os.path.join(ft.data, "tokenizer"))


def _dictionary_symbols(path):
    with open(path, encoding="utf-8") as f:
        return [line.rsplit(" ", 1)[0] for line in f.read().splitlines() if line.strip()]


def write_tokenizer(ft, out, vocab_size):
    """The tokeniser files transformers' AutoTokenizer reads, giving fairseq's ids."""
    spec = _tokenizer_spec(ft)
    symbols = _dictionary_symbols(spec.srcdict)  # fairseq ids 4, 5, ... then <mask>
    if 4 + len(symbols) + 1 != vocab_size:
        raise CheckpointError("%s: %d embedding rows, but the data's dictionary %s gives %d "
                              "ids" % (ft.path, vocab_size, spec.srcdict, 4 + len(symbols) + 1))
    max_length = _get(ft.args, "max_positions", 512)
    if ft.family == "bert":
        with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
            f.writelines(t + "\n" for t in list(BERT_SPECIALS) + symbols + ["[MASK]"])
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": not spec.bpe_cased,
                  "model_max_length": max_length, "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
    else:
        # fairseq's GPT-2 BPE maps a token to its GPT-2 id, the dictionary that id to the
        # model's row; HF's vocab.json maps the token to the row directly
        with open(spec.gpt2_encoder_json, encoding="utf-8") as f:
            encoder = json.load(f)
        row = {symbol: 4 + i for i, symbol in enumerate(symbols)}
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        vocab.update({token: row[str(i)] for token, i in encoder.items() if str(i) in row})
        vocab.update({s: i for s, i in row.items() if not s.isdigit()})  # madeupword0000 ...
        vocab["<mask>"] = vocab_size - 1
        with open(os.path.join(out, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False)
        with open(spec.gpt2_vocab_bpe, encoding="utf-8") as f:
            merges = f.read()
        with open(os.path.join(out, "merges.txt"), "w", encoding="utf-8") as f:
            f.write(merges)
        config = {"tokenizer_class": "RobertaTokenizer", "model_max_length": max_length,
                  "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                  "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
                  "mask_token": "<mask>", "add_prefix_space": False}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


# ---- the two exports ---------------------------------------------------------------------

def _refuse_existing(out, force):
    if os.path.exists(out) and not force:
        raise CheckpointError("--out %s already exists; pass --force to replace it" % out)


def _write_model(ft, out, tensors, config):
    from safetensors.torch import save_file

    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()},
              os.path.join(out, "model.safetensors"), {"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    write_tokenizer(ft, out, config["vocab_size"])


def export_hf(checkpoint, out, data=None, force=False):
    """OUT as a transformers sequence classifier; returns what was written."""
    from ..peft.checkpoints import merged_state

    out = os.path.abspath(out)
    _refuse_existing(out, force)
    ft = read_finetuned(checkpoint, data)
    _check_head(ft)
    if any(ft.plan.method(i, Prefix) for i in range(ft.plan.num_layers)):
        raise CheckpointError("%s: prefix-tuning adds key/value vectors to every attention "
                              "layer, which a transformers model has no weight for; export "
                              "LoRA, BitFit or full finetuning" % checkpoint)
    state = merged_state(ft.state, ft.plan)
    prefix = ft.family + "."
    tensors = {prefix + k: v for k, v in backbone_state(state, ft.family).items()}
    tensors.update(head_state(state, ft.head, ft.family, ehft=ehft_head(ft)))
    config = hf_config(ft)
    with atomic_dir(out) as tmp:
        _write_model(ft, tmp, tensors, config)
        if ehft_head(ft):
            import shutil

            shutil.copyfile(os.path.join(os.path.dirname(__file__), "hf_modeling_ehft.py"),
                            os.path.join(tmp, MODELING_FILE))
    return {"out": out, "architecture": config["architectures"][0],
            "labels": list(config["id2label"].values()),
            "trust_remote_code": ehft_head(ft)}


def _uniform_lora(ft):
    """The one LoRA of a plan PEFT can express, or a CheckpointError saying what it lacks."""
    plan = ft.plan
    first = plan.methods_for_layer(0)
    if plan.train_embeddings:
        raise CheckpointError("%s: plan %s trains the embeddings; a PEFT LoRA adapter holds "
                              "LoRA matrices and the head only" % (ft.path, format_plan(plan)))
    for layer in range(plan.num_layers):
        methods = plan.methods_for_layer(layer)
        kinds = {type(m) for m in methods}
        lacking = {BitFit: "BitFit (PEFT's LoRA saves no trained biases of frozen layers)",
                   Prefix: "prefix-tuning with this layout (PEFT's prefix tuning is another "
                           "model of the prefixes)",
                   Full: "fully trained layers", Frozen: "layers without LoRA"}
        for kind, what in lacking.items():
            if kind in kinds:
                raise CheckpointError("%s: plan %s has %s; export-peft writes a plan of one "
                                      "LoRA on every layer, which PEFT can express (export-hf "
                                      "exports any LoRA/BitFit/full plan merged)"
                                      % (ft.path, format_plan(plan), what))
        if methods != first:
            raise CheckpointError("%s: plan %s gives layers different LoRA settings (a "
                                  "per-stratum mixture); export-peft writes one rank and one "
                                  "target set for every layer, as PEFT's LoraConfig does"
                                  % (ft.path, format_plan(plan)))
    return first[0]


def peft_adapter(ft, lora):
    """(adapter tensors, adapter_config) in PEFT's own layout."""
    model = "base_model.model."
    hf_prefix = model + ft.family + ".encoder.layer."
    targets = [_LORA_TO_HF[t] for t in lora.targets]
    tensors = {}
    for key, tensor in ft.state.items():
        match = re.match(re.escape(_ENC) + r"layers\.(\d+)\.(.+)\.lora_(A|B)$", key)
        if match:
            hf = _FAIRSEQ_TO_HF[match.group(2)]
            tensors["%s%s.%s.lora_%s.weight" % (hf_prefix, match.group(1), hf,
                                                match.group(3))] = tensor
    tensors.update({model + k: v for k, v in head_state(ft.state, ft.head, ft.family).items()})
    # a full-match regex: "output.dense" alone would also match attention.output.dense
    pattern = r".*\.encoder\.layer\.\d+\.(%s)" % "|".join(re.escape(t) for t in targets)
    config = {"peft_type": "LORA", "task_type": "SEQ_CLS", "r": lora.r,
              "lora_alpha": lora.alpha, "lora_dropout": lora.dropout, "target_modules": pattern,
              "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
              "init_lora_weights": True, "inference_mode": True,
              "modules_to_save": ["classifier"] + (["pooler"] if ft.family == "bert" else [])}
    return tensors, config


def export_peft(checkpoint, out, base, data=None, force=False):
    """OUT as a PEFT LoRA adapter for the HF export BASE of the frozen backbone (written
    there unless BASE already holds it); returns what was written."""
    import torch
    from safetensors.torch import load_file, save_file

    out, base = os.path.abspath(out), os.path.abspath(base)
    _refuse_existing(out, force)
    ft = read_finetuned(checkpoint, data)
    _check_head(ft, remote_code=False)
    lora = _uniform_lora(ft)
    tensors, config = peft_adapter(ft, lora)
    frozen = {ft.family + "." + k: v for k, v in backbone_state(ft.state, ft.family).items()}
    if os.path.exists(os.path.join(base, "model.safetensors")):
        saved = load_file(os.path.join(base, "model.safetensors"))
        for key, tensor in frozen.items():
            if key not in saved or not torch.equal(saved[key], tensor.float()):
                raise CheckpointError("--base %s does not hold this checkpoint's frozen "
                                      "backbone (%s differs); give another --base or a new "
                                      "folder to write it to" % (base, key))
        wrote_base = False
    elif os.path.exists(base):
        raise CheckpointError("--base %s exists but holds no model.safetensors; expected the "
                              "HF export of the base backbone, or a new folder" % base)
    else:
        with atomic_dir(base) as tmp:  # the backbone only: the head comes with the adapter
            _write_model(ft, tmp, frozen, hf_config(ft))
        wrote_base = True
    config["base_model_name_or_path"] = base
    with atomic_dir(out) as tmp:
        save_file({k: v.detach().float().contiguous() for k, v in tensors.items()},
                  os.path.join(tmp, "adapter_model.safetensors"), {"format": "pt"})
        with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
            json.dump(config, f, indent=2)
        write_tokenizer(ft, tmp, frozen[ft.family + ".embeddings.word_embeddings.weight"]
                        .shape[0])
    return {"out": out, "base": base, "wrote_base": wrote_base, "r": lora.r,
            "targets": list(lora.targets), "tensors": len(tensors)}
