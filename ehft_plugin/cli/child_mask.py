"""`ehft child-mask`: Child-Tuning_D's child network, chosen before training, for stages run
without `ehft train` (fairseq-train with --child-tuning-mask)."""

import json


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="choose Child-Tuning_D's child network (Fisher information on the training "
                   "set) for --child-tuning-mask",
        description="Estimates the Fisher information of every encoder-layer parameter on the "
                    "whole training set (mean squared gradient of each batch's mean loss, "
                    "pretrained backbone, new head, dropout on) and writes the mask of the "
                    "share P with the highest (Xu et al. 2021). Give, after '--', the "
                    "fairseq-train arguments you will train with (without "
                    "--child-tuning-mask): the model, batches, seed and "
                    "--finetune-from-model checkpoint are read from them.")
    p.add_argument("--share", type=float, required=True, metavar="P",
                   help="share of the encoder-layer weights to update, 0 < P <= 1 (the EH-FT "
                        "paper searched 0.1, 0.2, 0.3)")
    p.add_argument("--out", required=True, help="the mask file to write (.safetensors)")
    p.add_argument("--max-examples", type=int, metavar="N",
                   help="estimate on the first N training examples only (default: all, as Xu "
                        "et al.)")
    p.add_argument("--fisher-clip", type=float, default=0.0, metavar="C",
                   help="clip each parameter tensor's gradient to norm C before squaring it, as "
                        "the EH-FT authors' Child-Tuning_D does with C=1.0 (default 0: none)")
    p.add_argument("fairseq_args", nargs="+", help="after '--': the fairseq-train arguments")
    return p


def run(args):
    from ..peft.child_tuning import check_share
    from ..train.child_mask import compute_mask

    from ..errors import EhftError

    check_share(args.share)
    if not args.fisher_clip >= 0:
        raise EhftError("--fisher-clip %g: expected a number >= 0" % args.fisher_clip)
    examples = compute_mask(["fairseq-train"] + list(args.fairseq_args), args.share, args.out,
                            max_examples=args.max_examples, fisher_clip=args.fisher_clip)
    print(json.dumps({"out": args.out, "share": args.share, "examples": examples}))
