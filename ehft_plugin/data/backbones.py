"""A backbone converted by `ehft convert` (interop/convert.py): its directory's record,
which prepare, the backbone BPE and the model read."""

import json
import os

from ..errors import EhftError

BACKBONE_FORMAT = "ehft-backbone/1"


class ConvertError(EhftError):
    """An HF folder that cannot be converted, or a directory that is no converted backbone."""


def load_backbone(path):
    """The record of a converted backbone directory, paths made absolute."""
    record_path = os.path.join(path, "ehft_backbone.json")
    if not os.path.isfile(record_path):
        raise ConvertError("--backbone %s: ehft_backbone.json not found; expected a directory "
                           "written by `ehft convert`" % path)
    with open(record_path) as f:
        record = json.load(f)
    if record.get("format") != BACKBONE_FORMAT:
        raise ConvertError("%s: not an %s record" % (record_path, BACKBONE_FORMAT))
    tok = dict(record["tokenizer"])
    for key in ("bpe_vocab_file", "srcdict", "gpt2_encoder_json", "gpt2_vocab_bpe",
                "sentencepiece_model"):
        if tok.get(key):
            tok[key] = os.path.join(os.path.abspath(path), tok[key])
    record["tokenizer"] = tok
    record["checkpoint"] = os.path.join(os.path.abspath(path), "model.pt")
    return record
