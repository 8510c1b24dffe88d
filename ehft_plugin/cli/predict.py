"""`ehft predict`: a raw test file -> predictions in the GLUE/SuperGLUE submission format."""

import json

from . import numbers


def add_parser(sub, name):
    p = sub.add_parser(
        name, help="write predictions for a raw test file (submission format)",
        description="Loads a checkpoint trained with --task glue_ehft and writes predictions for "
                    "a raw GLUE TSV (index<TAB>prediction) or SuperGLUE JSONL (idx, label) file.",
    )
    p.add_argument("--checkpoint", required=True, help="e.g. checkpoints/checkpoint_best.pt")
    p.add_argument("--input", required=True, help="raw file in the official format")
    p.add_argument("--out", required=True, help="submission file to write")
    p.add_argument("--data", help="`ehft prepare` directory (default: the one the checkpoint "
                                  "was trained on)")
    p.add_argument("--labeled", action="store_true",
                   help="the input has labels (a dev file): also print the official metrics")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    return p


def run(args):
    numbers.check(args, {"batch_size": numbers.POSITIVE_INT})
    from ..interop.predict import Predictor

    predictor = Predictor(args.checkpoint, data=args.data, batch_size=args.batch_size,
                          device=args.device)
    rows, scores = predictor.predict_file(args.input, labeled=args.labeled)
    predictor.write_submission(rows, args.out)
    print(json.dumps({"predictions": len(rows), "out": args.out, "metrics": scores}))
