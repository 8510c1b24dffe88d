"""Published finetuning settings that `ehft train --recipe` reproduces.

`fairseq`: fairseq's RoBERTa GLUE recipe (examples/roberta/config/finetuning/<task>.yaml):
learning rate, batch size, total updates and warmup updates per task, and the settings
shared by all of them (Adam β=(0.9, 0.98), ε=1e-6, weight decay 0.1 and polynomial decay come
with every `ehft train` stage; dropout 0.1, max 4400 tokens a batch, at most 10 epochs,
no gradient clipping are added here).
"""

import math
from dataclasses import dataclass
from typing import Tuple

from .errors import EhftError
from .methods import MethodError


@dataclass(frozen=True)
class Recipe:
    lr: float
    batch_size: int
    total_updates: int
    warmup_updates: int
    fairseq_args: Tuple[str, ...]

    @property
    def warmup_ratio(self):
        return self.warmup_updates / self.total_updates


_FAIRSEQ_SHARED = ("--dropout", "0.1", "--attention-dropout", "0.1", "--max-tokens", "4400",
                   "--max-epoch", "10", "--clip-norm", "0.0")

# task: (lr, batch size, total updates, warmup updates)
FAIRSEQ_GLUE = {
    "cola": (1e-5, 16, 5336, 320),
    "mnli": (1e-5, 32, 123873, 7432),
    "mrpc": (1e-5, 16, 2296, 137),
    "qnli": (1e-5, 32, 33112, 1986),
    "qqp": (1e-5, 32, 113272, 28318),
    "rte": (2e-5, 16, 2036, 122),
    "sst2": (1e-5, 32, 20935, 1256),
    "stsb": (2e-5, 16, 3598, 214),
}

RECIPES = ("fairseq",)


def get_recipe(name: str, task: str) -> Recipe:
    if name not in RECIPES:
        raise EhftError("unknown --recipe %r; expected one of: %s" % (name, ", ".join(RECIPES)))
    if task not in FAIRSEQ_GLUE:
        raise EhftError("--recipe fairseq has no settings for task %r; it covers: %s"
                        % (task, ", ".join(sorted(FAIRSEQ_GLUE))))
    lr, batch_size, updates, warmup = FAIRSEQ_GLUE[task]
    return Recipe(lr, batch_size, updates, warmup, _FAIRSEQ_SHARED)


def apply_recipe(opts, meta):
    """Fill the options a --recipe sets, unless given on the command line; its fairseq
    arguments go before the user's, so the user's win. --total-epochs becomes updates."""
    if opts.total_updates is not None and getattr(opts, "total_epochs", None) is not None:
        raise MethodError("give --total-updates or --total-epochs, not both")
    defaults = {"total_updates": None, "batch_size": 32, "warmup_ratio": 0.1, "lr_stage2": None}
    if opts.recipe:
        recipe = get_recipe(opts.recipe, meta["task"])
        defaults = {"total_updates": recipe.total_updates, "batch_size": recipe.batch_size,
                    "warmup_ratio": recipe.warmup_ratio, "lr_stage2": recipe.lr}
        opts.fairseq_args = list(recipe.fairseq_args) + list(opts.fairseq_args)
    if getattr(opts, "total_epochs", None) is not None:
        defaults["total_updates"] = None  # the epochs decide, not the recipe's updates
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    if getattr(opts, "total_epochs", None) is not None:
        opts.total_updates = epochs_to_updates(opts.total_epochs, meta, opts.batch_size)
    if opts.total_updates is None:
        raise EhftError("--total-updates or --total-epochs is required (or a --recipe that "
                        "sets the updates)")


def epochs_to_updates(epochs, meta, batch_size):
    """Updates in `epochs` passes over the training set: ceil(examples / batch size) a pass
    (glue_ehft keeps the last, smaller batch). With --max-tokens limiting batches, fairseq makes
    more, smaller batches, so the same updates then cover less than `epochs` passes."""
    if not epochs > 0:
        raise MethodError("--total-epochs %g: expected > 0" % epochs)
    if batch_size <= 0:
        raise MethodError("--batch-size %d: expected > 0" % batch_size)
    per_epoch = -(-meta["splits"]["train"]["examples"] // batch_size)
    return max(1, int(math.ceil(epochs * per_epoch - 1e-9)))
