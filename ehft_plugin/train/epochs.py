"""How many optimizer updates one pass over the training set takes.

fairseq-train cuts the training set into batches of --batch-size (glue_ehft keeps the last,
smaller one), deals the batches out to the processes of the world (each gets
ceil(batches / world), the short ones an empty batch), and takes one update every
--update-freq batches (an epoch's last, shorter group is an update too). `--total-epochs`
and the stage-1 epochs count passes through this, so accumulating gradients or adding
processes does not multiply them.
"""

import math
import os

from ..errors import EhftError


def updates_per_epoch(examples, batch_size, update_freq=1, world_size=1):
    batches = -(-examples // batch_size)
    per_process = -(-batches // world_size)
    return max(1, -(-per_process // update_freq))


def epochs_updates(epochs, per_epoch):
    """Updates in `epochs` passes (a fraction of a pass rounds up to whole updates)."""
    return max(1, int(math.ceil(epochs * per_epoch - 1e-9)))


def _last_value(args, flag):
    args = list(args)
    for i in range(len(args) - 1, -1, -1):
        if args[i] == flag and i + 1 < len(args):
            return args[i + 1]
        if args[i].startswith(flag + "="):
            return args[i].split("=", 1)[1]
    return None


def update_freq(fairseq_args):
    """--update-freq among the fairseq arguments (1 if absent); one value for every epoch."""
    value = _last_value(fairseq_args, "--update-freq")
    if value is None:
        return 1
    try:
        values = {int(v) for v in value.strip("[]").split(",") if v.strip()}
    except ValueError:
        values = set()
    if len(values) != 1 or min(values) < 1:
        raise EhftError("--update-freq %s: epochs are counted in updates with one --update-freq "
                        "for every epoch, an integer >= 1" % value)
    return values.pop()


def world_size(fairseq_args, environ=None):
    """Processes training together: torchrun's world, else --distributed-world-size, else
    fairseq's default (every visible GPU, unless --cpu)."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" in environ and "RANK" in environ:
        return max(1, int(environ["WORLD_SIZE"]))
    given = _last_value(fairseq_args, "--distributed-world-size")
    if given is not None:
        return max(1, int(given))
    if "--cpu" in fairseq_args:
        return 1
    import torch

    return max(1, torch.cuda.device_count())


def run_updates_per_epoch(opts, meta):
    """updates_per_epoch of an `ehft train` run (its batch size, --update-freq and world)."""
    args = list(getattr(opts, "fairseq_args", ()) or ())
    return updates_per_epoch(meta["splits"]["train"]["examples"], opts.batch_size,
                             update_freq(args), world_size(args))
