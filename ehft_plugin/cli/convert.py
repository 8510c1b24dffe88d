"""`ehft convert`: an HF BERT- or RoBERTa-family encoder folder -> a fairseq backbone."""

import json


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="convert an HF BERT/RoBERTa-family encoder into a fairseq checkpoint",
        description="Reads HF_DIR (config.json, model.safetensors or pytorch_model.bin, and "
                    "vocab.txt (BERT) or vocab.json + merges.txt (RoBERTa)) and writes "
                    "OUT_DIR/model.pt, dict.txt, the tokeniser files and ehft_backbone.json; `ehft prepare --backbone OUT_DIR` then prepares data "
                    "for it and `ehft train --checkpoint OUT_DIR/model.pt` trains it.")
    p.add_argument("hf_dir", help="HF model folder (BertModel & co., RobertaModel & co.)")
    p.add_argument("out_dir", help="output directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT_DIR")
    return p


def run(args):
    from ..interop.convert import convert

    record = convert(args.hf_dir, args.out_dir, force=args.force)
    print(json.dumps({"wrote": args.out_dir, "model": record["model"]}))
