"""`ehft handover`: EH-FT's hand-over as a command, for stages run without `ehft train`
(fairseq-hydra-train with method=ehft_stage2, or fairseq-train by hand)."""

import json

from ..train.handover import HEAD_NAME


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="write stage 2's start: the original backbone with stage 1's head",
        description="Takes the classification head of a finished stage-1 checkpoint and "
                    "grafts it onto the original pretrained checkpoint, bit for bit (EH-FT "
                    "paper §2.2); stage 2 starts from OUT (--finetune-from-model, or "
                    "checkpoint.finetune_from_model=OUT). --reserve PLAN also carries what "
                    "the stage-1 plan trained in the backbone (the -reserve variants).")
    p.add_argument("--stage1", required=True, help="stage 1's checkpoint_last.pt")
    p.add_argument("--checkpoint", required=True, help="the original pretrained model.pt")
    p.add_argument("--out", required=True, help="the start checkpoint to write")
    p.add_argument("--reserve", metavar="PLAN", help="stage 1's --peft plan (-reserve variants)")
    p.add_argument("--head-name", default=HEAD_NAME)
    return p


def run(args):
    import torch

    from ..atomic import atomic_file
    from ..peft.checkpoints import load_checkpoint
    from ..train.handover import start_from_stage1
    from ..peft.plan import parse_plan
    from ..train.pretrained import model_args, read_original

    original = read_original(args.checkpoint)
    plan = args.reserve and parse_plan(args.reserve, model_args(original)["encoder_layers"])
    start = start_from_stage1(original, load_checkpoint(args.stage1), args.head_name,
                              plan or None)
    with atomic_file(args.out) as tmp:
        torch.save(start, tmp)
    print(json.dumps({"out": args.out, "head": args.head_name,
                      "reserved": bool(args.reserve)}))
