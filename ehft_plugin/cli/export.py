"""`ehft export-adapter` and `ehft export-merged`: small or stock-loadable files from a
checkpoint trained with --arch roberta_ehft_*."""

import json
import os
import shutil

from ..atomic import atomic_file
from ..errors import CheckpointError


def _load(path):
    from ..peft.checkpoints import load_checkpoint

    state = load_checkpoint(path)
    model = state["cfg"]["model"]
    if getattr(model, "peft", None) is None:
        raise CheckpointError("%s was not trained with --arch roberta_ehft_* (no --peft plan)"
                              % path)
    return state, model


def add_adapter_parser(sub, name):
    p = sub.add_parser(name, help="save the trained PEFT parameters and head (safetensors)",
                       description="Writes only what the --peft plan trained (LoRA, prefixes, "
                                   "BitFit biases, full layers) and the classification heads.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="e.g. adapter.safetensors")
    return p


def run_adapter(args):
    from ..peft.checkpoints import extract, save_adapter
    from ..peft.plan import parse_plan

    state, model = _load(args.checkpoint)
    plan = parse_plan(model.peft, model.encoder_layers)
    tensors = extract(state["model"], plan)
    save_adapter(tensors, args.out, plan, {"arch": model.arch, "head_type": model.head_type})
    print(json.dumps({"out": args.out, "tensors": len(tensors),
                      "parameters": sum(t.numel() for t in tensors.values())}))


def add_merged_parser(sub, name):
    p = sub.add_parser(name, help="export a checkpoint stock fairseq loads (LoRA merged)",
                       description="Folds LoRA into the weights and writes OUT/model.pt with "
                                   "the dictionaries, loadable with stock fairseq's "
                                   "RobertaModel.from_pretrained(OUT) (--task "
                                   "sentence_prediction). Prefix-tuning cannot be merged.")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output directory")
    return p


def run_merged(args):
    import torch

    from ..peft.checkpoints import stock_checkpoint
    from ..data.binarize import load_metadata

    state, _ = _load(args.checkpoint)
    data = state["cfg"]["task"]["data"]
    meta = load_metadata(data)
    if meta["kind"] == "ranking":
        raise CheckpointError("%s: ranking tasks (%s) have no stock fairseq equivalent"
                              % (args.checkpoint, meta["task"]))
    exported = stock_checkpoint(state, meta["num_classes"], meta["kind"] == "regression")
    os.makedirs(args.out, exist_ok=True)
    exported["cfg"]["task"]["data"] = os.path.abspath(args.out)
    for sub in ("input0", "label"):
        source = os.path.join(data, sub, "dict.txt")
        if os.path.isfile(source):
            os.makedirs(os.path.join(args.out, sub), exist_ok=True)
            shutil.copyfile(source, os.path.join(args.out, sub, "dict.txt"))
    with atomic_file(os.path.join(args.out, "model.pt")) as tmp:
        torch.save(exported, tmp)
    print(json.dumps({"out": os.path.join(args.out, "model.pt")}))


def add_hf_parser(sub, name):
    p = sub.add_parser(
        name, help="export a finetuned classifier that HF transformers loads",
        description="Writes OUT as RobertaForSequenceClassification (RoBERTa backbones) or "
                    "BertForSequenceClassification (backbones converted from BERT): config.json "
                    "with the label names, model.safetensors (LoRA merged) and the tokeniser "
                    "files. fairseq's head (--head-type fairseq) is transformers' own; the "
                    "EH-FT head (--head-type ehft, the default of ehft train) comes with "
                    "modeling_ehft.py and auto_map in config.json: load it with "
                    "trust_remote_code=True. Prefix-tuning and ranking tasks have no "
                    "transformers equivalent.")
    return _hf_arguments(p, "output directory (must not exist)")


def _hf_arguments(p, out_help, base=False):
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help=out_help)
    if base:
        p.add_argument("--base", required=True, help="the HF export of the base backbone: "
                                                     "checked if it exists, else written")
    p.add_argument("--data", help="the directory `ehft prepare` wrote (default: the one the "
                                  "checkpoint was trained on)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    return p


def run_hf(args):
    from ..interop.hf_export import export_hf

    print(json.dumps(export_hf(args.checkpoint, args.out, args.data, args.force)))


def add_peft_parser(sub, name):
    p = sub.add_parser(
        name, help="export a LoRA plan as an HF PEFT adapter",
        description="Writes OUT as a PEFT LoRA adapter (adapter_config.json, "
                    "adapter_model.safetensors, the head in modules_to_save) for the HF export "
                    "of the frozen backbone in --base, which is written there if it does not "
                    "exist. Only a plan of one LoRA on every layer can be expressed in PEFT.")
    return _hf_arguments(p, "adapter directory (must not exist)", base=True)


def run_peft(args):
    from ..interop.hf_export import export_peft

    print(json.dumps(export_peft(args.checkpoint, args.out, args.base, args.data, args.force)))
