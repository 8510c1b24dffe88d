"""How long stage 1 of a two-stage method (ehft-*, lp-ft) trains, which of its heads goes on
to stage 2, and whether that head learned anything.

EH-FT's stage 1 exists to make a head better than a linear probe's (EH-FT paper §2.3). A
fixed share of a short budget does not (stage 1 ends at the majority class and EH-FT turns
into LP-FT), so by default stage 1 has a budget of its own:

- `plateau` (default): train until the dev metric has not improved for `patience`
  validations, at most `max_epochs` passes (the learning-rate schedule spans that cap), one
  validation a pass (every MAX_INTERVAL updates when a pass is longer), none before the
  warmup ends; the hand-over takes stage 1's best head (fairseq's checkpoint_best.pt).
- `updates` / `epochs`: exactly that many, the hand-over takes the last head (as the EH-FT
  authors' code, which trains stage 1 for a fixed number of epochs).
- `ratio`: the share of the total budget that stage 1 took before the plateau rule existed:
  `--total-updates` then covers both stages, and the last head is handed over.

With the other rules `--total-updates` / `--total-epochs` is stage 2's budget, the same budget
that `--method ft` gets from the same flags: stage 1 is spent on top of it (`ehft report`
shows every method's updates and wall time beside its score).
"""

import math
import os
from dataclasses import asdict, dataclass, replace
from typing import Optional

from ..errors import EhftError
from .epochs import epochs_updates, run_updates_per_epoch
from .methods import stage1_share_updates

PLATEAU, RATIO, UPDATES, EPOCHS = "plateau", "ratio", "updates", "epochs"
DEFAULT_PATIENCE = 5
# the EH-FT authors' longest stage 1 (CB, COPA, WSC, WNLI: 40 of 400 epochs, their
# scripts/run_multiseed.py); their Figure 6b finds that a longer stage 1 costs no accuracy
DEFAULT_MAX_EPOCHS = 40.0
MAX_INTERVAL = 1000  # updates between validations when a pass over the data is longer
BEST, LAST = "best", "last"
EARLY_STOP = "early stop since valid performance hasn't improved"  # fairseq's log line


class Stage1Error(EhftError, ValueError):
    """Stage-1 budget flags that contradict each other or are out of range."""


@dataclass(frozen=True)
class Stage1Budget:
    rule: str
    updates: int  # fixed rules: the updates; plateau: the cap
    head: str  # BEST or LAST: the head handed over
    ratio: Optional[float] = None
    epochs: Optional[float] = None  # the --stage1-epochs given, or the plateau's cap
    patience: Optional[int] = None
    validate_every: Optional[int] = None  # plateau: updates between validations
    pass_updates: Optional[int] = None  # plateau: updates in a pass over the training set

    def record(self):
        """For run.json: the rule and its numbers (the ratio rule records nothing, so that the
        run directories written before the other rules existed still resume)."""
        if self.rule == RATIO:
            return None
        return {k: v for k, v in asdict(self).items() if v is not None and k != "ratio"}

    def describe(self, metric):
        """One line for --dry-run and the log."""
        head = "hands over its %s head" % self.head
        if self.rule == PLATEAU:
            return ("until dev %s has not improved for %d validations (one every %d updates, "
                    "none in the warmup), at most %d updates (%g epochs); %s"
                    % (metric, self.patience, self.validate_every, self.updates, self.epochs,
                       head))
        if self.rule == RATIO:
            return "%g of the total updates: %d; %s" % (self.ratio, self.updates, head)
        if self.rule == EPOCHS:
            return "%g epochs: %d updates; %s" % (self.epochs, self.updates, head)
        return "%d updates; %s" % (self.updates, head)


def stage1_budget(opts, meta, total_updates):
    """The Stage1Budget that `ehft train`'s flags ask for (opts: stage1_ratio, stage1_updates,
    stage1_epochs, stage1_patience, stage1_max_epochs, stage1_head; None = not given);
    `total_updates`: the --total-updates/--total-epochs budget."""
    ratio = getattr(opts, "stage1_ratio", None)
    updates = getattr(opts, "stage1_updates", None)
    epochs = getattr(opts, "stage1_epochs", None)
    patience = getattr(opts, "stage1_patience", None)
    max_epochs = getattr(opts, "stage1_max_epochs", None)
    given = [flag for flag, value in (("--stage1-ratio", ratio), ("--stage1-updates", updates),
                                      ("--stage1-epochs", epochs)) if value is not None]
    if len(given) > 1:
        raise Stage1Error("give one stage-1 budget, not %s: --stage1-ratio takes a share of "
                          "--total-updates, the others are stage 1's own" % " and ".join(given))
    plateau_flags = [flag for flag, value in (("--stage1-patience", patience),
                                              ("--stage1-max-epochs", max_epochs))
                     if value is not None]
    if given and plateau_flags:
        raise Stage1Error("%s applies to the default stage 1 (until its dev metric stops "
                          "improving), not with %s" % (plateau_flags[0], given[0]))
    per_epoch = run_updates_per_epoch(opts, meta)
    head = getattr(opts, "stage1_head", None)
    if ratio is not None:
        if not 0 < ratio < 1:
            raise Stage1Error("--stage1-ratio %g: expected a number strictly between 0 and 1"
                              % ratio)
        return Stage1Budget(RATIO, stage1_share_updates(total_updates, ratio), head or LAST,
                            ratio=ratio)
    if updates is not None:
        if updates < 1:
            raise Stage1Error("--stage1-updates %d: expected an integer >= 1" % updates)
        return Stage1Budget(UPDATES, updates, head or LAST)
    if epochs is not None:
        if not (math.isfinite(epochs) and epochs > 0):
            raise Stage1Error("--stage1-epochs %g: expected a number > 0" % epochs)
        return Stage1Budget(EPOCHS, epochs_updates(epochs, per_epoch), head or LAST,
                            epochs=epochs)
    patience = DEFAULT_PATIENCE if patience is None else patience
    max_epochs = DEFAULT_MAX_EPOCHS if max_epochs is None else max_epochs
    if patience < 1:
        raise Stage1Error("--stage1-patience %d: expected an integer >= 1" % patience)
    if not (math.isfinite(max_epochs) and max_epochs > 0):
        raise Stage1Error("--stage1-max-epochs %g: expected a number > 0" % max_epochs)
    cap = epochs_updates(max_epochs, per_epoch)
    return Stage1Budget(PLATEAU, cap, head or BEST, epochs=max_epochs, patience=patience,
                        validate_every=min(per_epoch, MAX_INTERVAL), pass_updates=per_epoch)


def replace_interval(budget, every):
    """The plateau budget validating every `every` updates (a --validate-interval-updates
    given after '--')."""
    if every < 1:
        raise Stage1Error("--validate-interval-updates %d: expected an integer >= 1" % every)
    return replace(budget, validate_every=every)


def fairseq_flags(budget, warmup_updates):
    """fairseq-train arguments that make stage 1 follow `budget` (plateau: patience, and a
    save at every validation, so that checkpoint_best.pt is the best head)."""
    if budget.rule != PLATEAU:
        return []
    every = budget.validate_every
    # one validation and save a pass when a pass is short (fairseq's defaults), at fixed
    # updates when it is long; none before the warmup has ended
    flags = ["--patience", str(budget.patience),
             "--validate-after-updates", str(warmup_updates)]
    if every != budget.pass_updates:
        flags += ["--validate-interval-updates", str(every), "--save-interval-updates",
                  str(every), "--keep-interval-updates", "1"]
    return flags


def stopped_early(log_path):
    """Whether fairseq stopped the stage on its patience (a finished stage short of its cap)."""
    if not os.path.isfile(log_path):
        return False
    with open(log_path) as f:
        return any(EARLY_STOP in line for line in f)


# ---- did stage 1 make a head? ----------------------------------------------

def dev_class_counts(data_dir, meta):
    """Examples of each class in the dev split ("valid") of a prepared data directory; None
    for regression. `ehft prepare` records them; data it prepared before that are read from
    the binarised labels (with fairseq, which `ehft train` otherwise does not import)."""
    from ..data.task_table import REGRESSION

    if meta.get("kind") == REGRESSION:
        return None
    recorded = meta.get("splits", {}).get("valid", {}).get("label_counts")
    if recorded is not None:
        return list(recorded)
    from fairseq.data import data_utils

    from ..data.tokenisers import load_dictionary

    label_dir = os.path.join(data_dir, "label")
    labels = load_dictionary(os.path.join(label_dir, "dict.txt"))
    dataset = data_utils.load_indexed_dataset(os.path.join(label_dir, "valid"), labels)
    if dataset is None:
        raise EhftError("%s: no dev labels (label/valid.bin); re-run `ehft prepare`"
                        % data_dir)
    counts = [0] * len(meta["labels"])
    for i in range(len(dataset)):
        counts[int(dataset[i][0]) - labels.nspecial] += 1
    return counts


def constant_level(data_dir, meta, metric):
    """(the dev metric of the best constant prediction, dev examples)."""
    from ..metrics import constant_level as level

    counts = dev_class_counts(data_dir, meta)
    examples = sum(counts) if counts else meta["splits"]["valid"]["examples"]
    return level(metric, counts or []), examples


def margin(examples):
    """How far above the constant level a head must score to count as one: one dev example,
    and at least one point."""
    return max(1.0, 100.0 / max(examples, 1))


def head_check(records, metric, level, examples, head):
    """What done.json records of the head a stage hands over: its dev score (the best
    validation or the last, as `head` says), the best, the constant level, and whether the
    head is at it. None when the stage never validated."""
    key = "valid_" + metric
    scores = [float(r[key]) for r in records if r.get("subset") == "valid" and key in r]
    if not scores:
        return None
    best = max(scores)
    return {"from": head, "dev": best if head == BEST else scores[-1], "best_dev": best,
            "metric": metric, "constant_level": level, "dev_examples": examples,
            "at_chance": best <= level + margin(examples)}


def warning(run_dir, stage, check, raise_flag):
    """The line printed when a stage's best head is no better than a constant."""
    return ("ehft train: warning: %s %s made no head: best dev %s %.2f is at the level of "
            "always predicting one class (%.2f, %d dev examples), so stage 2 starts from a "
            "head that learned nothing; raise %s"
            % (run_dir, stage, check["metric"], check["best_dev"], check["constant_level"],
               check["dev_examples"], raise_flag))
