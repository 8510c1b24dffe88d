"""`ehft prepare TASK`: official raw files -> fairseq-binarised data for --task glue_ehft."""

import json
import logging
import os

from ..data.task_table import TASKS, get_task
from ..data.tokenisers import BPE_CHOICES, TokeniserSpec
from ..errors import EhftError

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
    p.add_argument("task", help="task name, e.g. rte, sst2 (or SST-2), copa, superglue-rte; "
                                "or custom (your own files, described by the flags below)")
    p.add_argument("--raw-dir", help="directory holding the official raw files (not for custom)")
    p.add_argument("--out-dir", required=True, help="output directory (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing --out-dir")
    p.add_argument("--backbone", help="a directory written by `ehft convert`: its tokeniser, "
                                      "dictionary and input format (instead of --bpe ...)")
    p.add_argument("--max-length", type=int, metavar="N",
                   help="truncate each input to N tokens (>= 4), <s> and separators included, "
                        "shortening the longer segment first as HF tokenizers do with "
                        "truncation='longest_first'; not for tasks with answer choices "
                        "(default: keep every token; glue_ehft truncates at --max-positions)")
    own = p.add_argument_group(
        "custom: your own CSV, TSV or JSONL files (`ehft prepare custom`)",
        "The task is written into the output's ehft_task.json: fairseq-train --task glue_ehft, "
        "ehft train, report and predict read it from there, with no code.")
    own.add_argument("--name", help="the task's name (runs go to SAVE_DIR/NAME/...)")
    own.add_argument("--train", help="training file (.csv, .tsv or .jsonl, with a header row "
                                     "for CSV and TSV)")
    own.add_argument("--dev", help="dev file, same format")
    own.add_argument("--test", help="test file (labels not needed), same format; checked now, "
                                    "read by `ehft predict`")
    own.add_argument("--format", choices=("csv", "tsv", "jsonl"),
                     help="the files' format (default: from --train's extension)")
    own.add_argument("--text-fields", nargs="+", metavar="FIELD",
                     help="the text column, or the two of a pair")
    own.add_argument("--label-field", help="the label column")
    own.add_argument("--regression", action="store_true",
                     help="the label is a number to predict (default: classes)")
    own.add_argument("--labels", nargs="+",
                     help="the classes in order (default: train's labels, sorted)")
    own.add_argument("--metric", help="the dev metric chosen on: accuracy (default), f1 (of the "
                                      "second class), macro_f1, mcc, acc_f1; regression: "
                                      "pearson (default), spearman, pearson_spearman")
    own.add_argument("--id-field", help="the id column written in predictions (default: the "
                                        "row number)")
    add_tokeniser_arguments(p)
    return p


CUSTOM_FLAGS = ("name", "train", "dev", "test", "format", "text_fields", "label_field",
                "labels", "metric", "id_field")


def _custom_spec(args):
    from ..data.custom import build_spec

    missing = [f for f in ("name", "train", "dev", "text_fields", "label_field")
               if getattr(args, f) is None]
    if missing:
        raise EhftError("ehft prepare custom needs --%s" % missing[0].replace("_", "-"))
    if args.raw_dir is not None:
        raise EhftError("--raw-dir: a custom task names its files with --train, --dev, --test")
    return build_spec(args.name, args.train, args.dev, args.text_fields, args.label_field,
                      test=args.test, regression=args.regression, labels=args.labels,
                      metric=args.metric, id_field=args.id_field, fmt=args.format)


def run(args):
    from ..data.binarize import prepare  # torch: only once the arguments are read

    if args.task.lower() == "custom":
        spec, raw_dir = _custom_spec(args), ""
    else:
        given = [f for f in CUSTOM_FLAGS if getattr(args, f) is not None] + \
            (["regression"] if args.regression else [])
        if given:
            raise EhftError("--%s: only for `ehft prepare custom`; %s reads its official files "
                            "from --raw-dir" % (given[0].replace("_", "-"), args.task))
        spec, raw_dir = get_task(args.task), args.raw_dir
        if raw_dir is None:
            raise EhftError("--raw-dir is required: the directory of %s's official files"
                            % args.task)
    if os.path.isfile(raw_dir):
        raise EhftError("--raw-dir %s is a file; expected the directory that holds the task's "
                        "official raw files (%s's, not one of them)"
                        % (args.raw_dir, os.path.dirname(args.raw_dir) or "."))
    tokeniser, pair_format = tokeniser_from_args(args), "roberta"
    if args.backbone:
        from ..data.backbones import load_backbone

        given = [f for f in ("srcdict", "gpt2_encoder_json", "gpt2_vocab_bpe", "bpe_vocab_file",
                             "sentencepiece_model") if getattr(args, f)]
        if given:
            raise EhftError("--backbone sets the tokeniser; drop --%s"
                            % given[0].replace("_", "-"))
        backbone = load_backbone(args.backbone)
        tokeniser = TokeniserSpec(**backbone["tokenizer"])
        pair_format = backbone.get("pair_format", "roberta")
    meta = prepare(spec, raw_dir, args.out_dir, tokeniser, force=args.force,
                   pair_format=pair_format, max_length=args.max_length)
    counts = {split: info["examples"] for split, info in meta["splits"].items()}
    logger.info("wrote %s: task %s, %s", args.out_dir, spec.name, json.dumps(counts))
    print(args.out_dir)
