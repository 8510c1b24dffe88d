"""Published finetuning settings that `ehft train --recipe` reproduces.

`ehft-paper`: the EH-FT authors' settings (THUDM/Efficient-Head-Finetuning, the code behind
Table 1; docs/recipes.md cites each to its file and line): per-task epochs of both stages
with stage 1 a fixed tenth of them, batch 32, stage 2 at 1e-5 (3e-5 on WiC), stage 1 at 5e-4
(BitFit, LoRA), 5e-3 (prefix) or 1e-3 (linear probe), warmup 10% and linear decay, the head
initialised N(0, 0.005), gradient clipping 0.1, AdamW weight decay 0.01 with biases and
LayerNorm excluded, LoRA r=8, α=16 on q, k, v and out, Mixout p=0.7 on every Linear (the
head too) with dropout off, Child-Tuning_D p=0.1 with each tensor's Fisher gradient clipped
at norm 1.0.

`fairseq`: fairseq's RoBERTa GLUE recipe (examples/roberta/config/finetuning/<task>.yaml):
learning rate, batch size, total updates and warmup updates per task, and the settings
shared by all of them (Adam β=(0.9, 0.98), ε=1e-6, weight decay 0.1 and polynomial decay come
with every `ehft train` stage; dropout 0.1, max 4400 tokens a batch, at most 10 epochs,
no gradient clipping are added here).
"""

from dataclasses import dataclass
from typing import Tuple

from ..errors import EhftError
from .epochs import epochs_updates, update_freq, updates_per_epoch, world_size
from .methods import FULL_FINETUNING_LR, Method, MethodError, resolve_method


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

# EH-FT authors, scripts/run_multiseed.py L88-101: task -> (epochs of both stages, stage-1
# epochs); their README's Table 1 tasks. Their "rte" is SuperGLUE's copy of RTE.
EHFT_PAPER_EPOCHS = {
    "rte": (60, 6), "superglue-rte": (60, 6), "mrpc": (60, 6),
    "boolq": (40, 4), "wic": (40, 4),
    "cb": (400, 40), "copa": (400, 40),
    "qnli": (10, 1),
    "cola": (20, 2), "stsb": (20, 2),
}
EHFT_PAPER_BATCH = 32  # run_multiseed.py L83
EHFT_PAPER_WARMUP = 0.1  # finetune.sh L92
EHFT_PAPER_STAGE2_LR = {"wic": 3e-5}  # run_multiseed.py L79-81; 1e-5 elsewhere
# finetune.sh L117-128: stage 1 (and the one-stage PEFT methods) by PEFT method
EHFT_PAPER_STAGE1_LR = {"head": 1e-3, "prefix": 5e-3}  # 5e-4 otherwise
EHFT_PAPER_FAIRSEQ = (
    "--clip-norm", "0.1",  # run_multiseed.py L13
    "--weight-decay", "0.01", "--no-decay-bias-norm",  # L29; deepspeed_training.py L271-292
    "--fp16-no-flatten-grads",  # under --fp16 the groups need one fp32 copy a parameter
    "--head-init-std", "0.005",  # finetune_roberta.py L33, mlp_head.py L46
)
EHFT_PAPER_LORA = "lora(r=8,alpha=16,targets=q+k+v+out)"  # finetune_roberta.py L210-211, PET.py L137
EHFT_PAPER_MIXOUT = "mixout(p=0.7)"  # deepspeed_training.py L147
# every Dropout replaced by Dropout(0) with mixout (deepspeed_training.py L60-61)
EHFT_PAPER_MIXOUT_FAIRSEQ = ("--mixout-head", "--dropout", "0", "--attention-dropout", "0",
                             "--activation-dropout", "0", "--pooler-dropout", "0")
EHFT_PAPER_CHILD = "child-tuning-d(p=0.1,fisher_clip=1.0)"  # run_multiseed.py L55; finetune.sh L141

RECIPES = ("fairseq", "ehft-paper")


def get_recipe(name: str, task: str) -> Recipe:
    if name not in RECIPES:
        raise EhftError("unknown --recipe %r; expected one of: %s" % (name, ", ".join(RECIPES)))
    if name == "ehft-paper":
        raise EhftError("--recipe ehft-paper sets epochs, not a Recipe of updates (apply_recipe)")
    if task not in FAIRSEQ_GLUE:
        raise EhftError("--recipe fairseq has no settings for task %r; it covers: %s"
                        % (task, ", ".join(sorted(FAIRSEQ_GLUE))))
    lr, batch_size, updates, warmup = FAIRSEQ_GLUE[task]
    return Recipe(lr, batch_size, updates, warmup, _FAIRSEQ_SHARED)


def _ehft_paper_task(task):
    if task not in EHFT_PAPER_EPOCHS:
        raise EhftError("--recipe ehft-paper: the EH-FT authors did not run task %r; it covers: "
                        "%s" % (task, ", ".join(sorted(EHFT_PAPER_EPOCHS))))
    return EHFT_PAPER_EPOCHS[task]


def _ehft_paper_method(name):
    """The method as the EH-FT authors ran it (LoRA r=8 on q, k, v, out; Mixout p=0.7;
    Child-Tuning_D p=0.1 with clipped Fisher gradients); a method given with its own
    arguments, e.g. 'mixout(p=0.9)', is kept as written."""
    if name in ("lora", "ehft-lora", "ehft-lora-reserve"):
        return name.replace("lora", EHFT_PAPER_LORA, 1)
    return {"mixout": EHFT_PAPER_MIXOUT, "child-tuning-d": EHFT_PAPER_CHILD}.get(name, name)


def recipe_method(config, method: Method, num_layers: int) -> Method:
    """`method` as --recipe runs it (the ehft-paper recipe's LoRA, Mixout and Child-Tuning
    settings and stage-1 rates), under its own name."""
    from dataclasses import replace

    if config.recipe != "ehft-paper":
        return method
    written = _ehft_paper_method(method.name)
    stages = resolve_method(written, num_layers).stages if written != method.name else \
        method.stages
    stages = tuple(s if s.peft == "full" or s.peft.startswith("mixout") else replace(
        s, lr=EHFT_PAPER_STAGE1_LR.get(s.peft.split(":")[-1].split("(")[0], 5e-4))
        for s in stages)
    return replace(method, stages=stages)


def _ehft_paper_values(config, meta, method):
    """What the ehft-paper recipe fills in: epochs (a two-stage method's stage 1 a fixed
    tenth, stage 2 the rest), batch, warmup, stage-2 rate; its fairseq arguments."""
    epochs, stage1_epochs = _ehft_paper_task(meta["task"])
    two_stage = method is not None and method.two_stage
    stage1_given = any(getattr(config, name) is not None for name in (
        "stage1_ratio", "stage1_updates", "stage1_epochs", "stage1_patience", "stage1_max_epochs"))
    values = {"batch_size": EHFT_PAPER_BATCH, "warmup_ratio": EHFT_PAPER_WARMUP,
              "lr_stage2": EHFT_PAPER_STAGE2_LR.get(meta["task"], FULL_FINETUNING_LR)}
    if two_stage and not stage1_given:
        values["stage1_epochs"] = stage1_epochs
    if config.total_updates is None and config.total_epochs is None:
        # the authors' epochs cover both stages: stage 2 gets what stage 1 leaves (with a
        # stage-1 flag of the user's, stage 2 still gets the authors' stage-2 epochs)
        values["total_epochs"] = epochs - stage1_epochs if two_stage else epochs
    extra = EHFT_PAPER_FAIRSEQ
    if method is not None and _ehft_paper_method(method.name).startswith("mixout"):
        extra = extra + EHFT_PAPER_MIXOUT_FAIRSEQ
    return values, tuple(extra)


def apply_recipe(config, meta, method=None):
    """The RunConfig with what its --recipe sets filled in where the command line left it
    out; the recipe's fairseq arguments go before the user's, so the user's win.
    --total-epochs becomes updates. `method` (resolved): what the ehft-paper recipe's budgets
    depend on."""
    if config.total_updates is not None and config.total_epochs is not None:
        raise MethodError("give --total-updates or --total-epochs, not both")
    values = {"total_updates": None, "batch_size": 32, "warmup_ratio": 0.1, "lr_stage2": None}
    extra = ()
    if config.recipe == "ehft-paper":
        paper, extra = _ehft_paper_values(config, meta, method)
        values.update(paper)
    elif config.recipe:
        recipe = get_recipe(config.recipe, meta["task"])
        values = {"total_updates": recipe.total_updates, "batch_size": recipe.batch_size,
                  "warmup_ratio": recipe.warmup_ratio, "lr_stage2": recipe.lr}
        extra = tuple(recipe.fairseq_args)
    config = config.replace(
        fairseq_args=extra + tuple(config.fairseq_args),
        **{key: value for key, value in values.items() if getattr(config, key) is None})
    if config.total_epochs is not None:  # the epochs decide, not the recipe's updates
        args = list(config.fairseq_args)
        config = config.replace(total_updates=epochs_to_updates(
            config.total_epochs, meta, config.batch_size, update_freq(args), world_size(args)))
    if config.total_updates is None:
        raise EhftError("--total-updates or --total-epochs is required (or a --recipe that "
                        "sets the updates)")
    return config


def epochs_to_updates(epochs, meta, batch_size, update_freq=1, world_size=1):
    """Updates in `epochs` passes over the training set (epochs.py: batches dealt to the
    processes, --update-freq batches an update). With --max-tokens limiting batches, fairseq
    makes more, smaller batches, so the same updates then cover less than `epochs` passes."""
    if not epochs > 0:
        raise MethodError("--total-epochs %g: expected > 0" % epochs)
    if batch_size <= 0:
        raise MethodError("--batch-size %d: expected > 0" % batch_size)
    return epochs_updates(epochs, updates_per_epoch(meta["splits"]["train"]["examples"],
                                                    batch_size, update_freq, world_size))