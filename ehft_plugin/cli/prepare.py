"""`ehft prepare TASK`: official raw files -> fairseq-binarised data for --task glue_ehft."""

import json
import logging
import os

from ..data.task_table import TASKS, get_task
from ..data.tokenisers import BPE_CHOICES, TokeniserSpec

logger = logging.getLogger("ehft.prepare")


def add_tokeniser_arguments(p):
    g = p.add_argument_group("tokeniser (fairseq's flag names)")
    g.add_argument("--bpe", choices=BPE_CHOICES, default="gpt2",
                   help="gpt2 (RoBERTa), bert (WordPiece) or sentencepiece (default: gpt2)")
    g.add_argument("--srcdict", help="fairseq dict.txt mapping BPE symbols to model ids")
    g.add_argument("--gpt2-encoder-json", help="GPT-2 encoder.json (with --bpe gpt2)")
    g.add_argument("--gpt2-vocab-bpe", help="GPT-2 vocab.bpe (with --bpe gpt2)")
    g.add_argument("--bpe-vocab-file", help="WordPiece vocab.txt (with --bpe bert)")
    g.add_argument("--bpe-cased", action="store_true",
                   help="keep case (with --bpe bert; default lower-cases, as uncased BERT)")
    g.add_argument("--sentencepiece-model", help="sentencepiece .model (with --bpe sentencepiece)")


def tokeniser_from_args(args) -> TokeniserSpec:
    return TokeniserSpec(
        bpe=args.bpe, srcdict=args.srcdict, gpt2_encoder_json=args.gpt2_encoder_json,
        gpt2_vocab_bpe=args.gpt2_vocab_bpe, bpe_vocab_file=args.bpe_vocab_file,
        bpe_cased=args.bpe_cased, sentencepiece_model=args.sentencepiece_model,
    )


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="tokenise and binarise a GLUE/SuperGLUE task",
        description="Reads the official raw files of TASK (%s) from --raw-dir and writes "
                    "fairseq-binarised data for --task glue_ehft." % ", ".join(sorted(TASKS)),
    )
    p.add_argument("task", help="task name, e.g. rte, sst2 (or SST-2), copa, superglue-rte")
    p.add_argument("--raw-dir", required=True, help="directory holding the official raw files")
    p.add_argument("--out-dir", required=True, help="output directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing --out-dir")
    p.add_argument("--backbone", help="a directory written by `ehft convert`: its tokeniser, "
                                      "dictionary and input format (instead of --bpe ...)")
    p.add_argument("--max-length", type=int, metavar="N",
                   help="truncate each input to N tokens (>= 4), <s> and separators included, "
                        "shortening the longer segment first as HF tokenizers do with "
                        "truncation='longest_first'; not for tasks with answer choices "
                        "(default: keep every token; glue_ehft truncates at --max-positions)")
    add_tokeniser_arguments(p)
    return p


def run(args):
    from ..data.binarize import prepare  # torch: only once the arguments are read

    spec = get_task(args.task)
    if os.path.isfile(args.raw_dir):
        from ..errors import EhftError

        raise EhftError("--raw-dir %s is a file; expected the directory that holds the task's "
                        "official raw files (%s's, not one of them)"
                        % (args.raw_dir, os.path.dirname(args.raw_dir) or "."))
    tokeniser, pair_format = tokeniser_from_args(args), "roberta"
    if args.backbone:
        from ..convert import load_backbone
        from ..errors import EhftError

        given = [f for f in ("srcdict", "gpt2_encoder_json", "gpt2_vocab_bpe", "bpe_vocab_file",
                             "sentencepiece_model") if getattr(args, f)]
        if given:
            raise EhftError("--backbone sets the tokeniser; drop --%s"
                            % given[0].replace("_", "-"))
        backbone = load_backbone(args.backbone)
        tokeniser = TokeniserSpec(**backbone["tokenizer"])
        pair_format = backbone.get("pair_format", "roberta")
    meta = prepare(spec, args.raw_dir, args.out_dir, tokeniser, force=args.force,
                   pair_format=pair_format, max_length=args.max_length)
    counts = {split: info["examples"] for split, info in meta["splits"].items()}
    logger.info("wrote %s: task %s, %s", args.out_dir, spec.name, json.dumps(counts))
    print(args.out_dir)
