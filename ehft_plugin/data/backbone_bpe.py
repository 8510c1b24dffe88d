"""`bpe: ehft_backbone`: the tokeniser of a folder written by `ehft convert`, for fairseq's hub.

`RobertaModel.from_pretrained(DIR, "model.pt")` builds the BPE from the checkpoint's
`cfg.bpe` and sets every `data` key of that configuration to DIR itself. This BPE reads
DIR/ehft_backbone.json and builds fairseq's own `bert` or `gpt2` BPE on the files beside it,
so the folder can be moved or copied and still tokenises as the backbone was trained, with
no download (fairseq's defaults for both would fetch files from the internet).
"""

import os
from dataclasses import dataclass, field

from fairseq.data.encoders import register_bpe
from fairseq.data.encoders.gpt2_bpe import GPT2BPE, GPT2BPEConfig
from fairseq.data.encoders.hf_bert_bpe import BertBPE, BertBPEConfig
from fairseq.dataclass import FairseqDataclass

from ..errors import TokeniserError

NAME = "ehft_backbone"


@dataclass
class BackboneBpeConfig(FairseqDataclass):
    data: str = field(default=".", metadata={"help": "the converted backbone's folder (the "
                                                     "hub sets it to the folder it loads)"})


@register_bpe(NAME, dataclass=BackboneBpeConfig)
class BackboneBpe:
    def __init__(self, cfg):
        from .backbones import load_backbone

        tok = load_backbone(os.path.abspath(cfg.data))["tokenizer"]
        if tok["bpe"] == "bert":
            inner = BertBPEConfig(bpe_cased=tok["bpe_cased"], bpe_vocab_file=tok["bpe_vocab_file"])
            self._bpe = BertBPE(inner)
        elif tok["bpe"] == "gpt2":
            self._bpe = GPT2BPE(GPT2BPEConfig(gpt2_encoder_json=tok["gpt2_encoder_json"],
                                              gpt2_vocab_bpe=tok["gpt2_vocab_bpe"]))
        else:
            raise TokeniserError("%s: bpe %r has no fairseq hub tokeniser"
                                 % (os.path.join(cfg.data, "ehft_backbone.json"), tok["bpe"]))

    def encode(self, x: str) -> str:
        return self._bpe.encode(x)

    def decode(self, x: str) -> str:
        return self._bpe.decode(x)

    def is_beginning_of_word(self, x: str) -> bool:
        return self._bpe.is_beginning_of_word(x)
