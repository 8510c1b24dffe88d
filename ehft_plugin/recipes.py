"""Published finetuning settings that `ehft train --recipe` reproduces.

`fairseq`: fairseq's RoBERTa GLUE recipe (examples/roberta/config/finetuning/<task>.yaml):
learning rate, batch size, total updates and warmup updates per task, and the settings
shared by all of them (Adam β=(0.9, 0.98), ε=1e-6, weight decay 0.1 and polynomial decay come
with every `ehft train` stage; dropout 0.1, max 4400 tokens a batch, at most 10 epochs,
no gradient clipping are added here).
"""

from dataclasses import dataclass
from typing import Tuple

from .errors import EhftError


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
