"""Child-Tuning_D's mask for a stage, computed before it trains: the Fisher information of
the model its fairseq-train command builds (peft/child_tuning.py says how the child is chosen
and applied)."""

import os

import torch

from ..peft.child_tuning import (ChildTuningError, check_share, choose_child, fisher_information,
                                 save_mask)
from .rebuild import Built


def _flag(command, flag, default=None):
    return command[command.index(flag) + 1] if flag in command[:-1] else default


def compute_mask(command, share, out, device=None, max_examples=None, fisher_clip=0.0):
    """The child of share `share` of the model a fairseq-train `command` (program first, no
    --child-tuning-mask) trains, written to `out`: Fisher information over the whole training
    split (file order, the command's batch size), with the backbone of its
    --finetune-from-model checkpoint and a new head seeded with its --seed. Returns the number
    of training examples used (the first `max_examples` in file order, when given: a quicker,
    rougher estimate than Xu et al.'s whole training set)."""
    check_share(share)
    if "--child-tuning-mask" in command:
        raise ChildTuningError("the fairseq-train arguments hold --child-tuning-mask; give them "
                               "without it (the mask is what this computes)")
    start = _flag(command, "--finetune-from-model") or _flag(command, "--restore-file")
    if not start:
        raise ChildTuningError("the fairseq-train arguments name no --finetune-from-model (the "
                               "pretrained checkpoint the stage starts from)")
    seed = int(_flag(command, "--seed", 1))
    if device is None:
        device = "cuda" if torch.cuda.is_available() and "--cpu" not in command else "cpu"
    built = Built(command, "the fairseq-train arguments", seed=seed, device=device).load(
        start, strict=False)
    built.task.load_dataset("train")
    examples = len(built.task.dataset("train"))
    if max_examples is not None:
        if max_examples < 1:
            raise ChildTuningError("--max-examples %d: expected >= 1" % max_examples)
        examples = min(examples, max_examples)
    batch_size = int(built.cfg.dataset.batch_size or 32)
    torch.manual_seed(seed)  # dropout masks
    fisher = fisher_information(built.model, built.criterion,
                                built.batches("train", examples, batch_size), fisher_clip)
    masks = choose_child(fisher, share)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_mask(masks, out, share, examples)
    return examples
