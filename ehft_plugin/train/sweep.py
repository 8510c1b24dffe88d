"""A sweep: `ehft train` with several methods, rates or batch sizes runs their product, each
setting × seed in its own run directory.

A flag given several values names its value in the run's path,
SAVE_DIR/TASK/METHOD/SETTING/seedK with SETTING e.g. `lr1=0.0005_lr2=1e-05`, so that the
settings of one sweep never share a directory and a relaunch finds each run where it left
it. A flag given one value adds nothing to the path: a command without a sweep writes where
it always did. A swept rate that a method does not use (the stage-1 rate of `ft`) leaves its
runs out of the product rather than training the same run twice.
"""

import copy
from dataclasses import dataclass
from typing import Tuple

from ..errors import EhftError

# flags that take several values: (option dest, its name in a run's path)
SWEPT = (("lr_stage1", "lr1"), ("lr_stage2", "lr2"), ("batch_size", "bs"))
MAX_RUNS = 500  # a longer sweep needs --yes: a stray value list should not queue days


@dataclass(frozen=True)
class Setting:
    method: str
    values: Tuple[Tuple[str, object], ...]  # (dest, value) of each SWEPT flag, None: default
    swept: Tuple[str, ...]  # the dests given several values

    def get(self, dest):
        return dict(self.values)[dest]

    def options(self, opts):
        """A copy of the command's options holding this setting's single values."""
        one = copy.copy(opts)
        one.method = self.method
        one.fairseq_args = list(opts.fairseq_args)
        for dest, value in self.values:
            setattr(one, dest, value)
        return one

    def label(self, used):
        """The path part naming this setting's swept values among the flags `used` (the dests
        that change the resolved method's training); "" when none is swept."""
        return "_".join("%s=%s" % (name, _format(self.get(dest))) for dest, name in SWEPT
                        if dest in self.swept and dest in used)


def _format(value):
    return "%g" % value if isinstance(value, float) else str(value)


def values_of(opts, dest):
    values = getattr(opts, dest, None)
    if values is None:
        return [None]
    return list(values) if isinstance(values, (list, tuple)) else [values]


def settings(opts):
    """Every method × swept value of the command, in the order given (methods outermost)."""
    methods = values_of(opts, "method")
    lists = [(dest, values_of(opts, dest)) for dest, _ in SWEPT]
    for dest, values in lists:
        if len(set(values)) != len(values):
            raise EhftError("--%s %s: a value is given twice"
                            % (dest.replace("_", "-"), " ".join(_format(v) for v in values)))
    if len(set(methods)) != len(methods):
        raise EhftError("--method %s: a method is given twice" % " ".join(methods))
    swept = tuple(dest for dest, values in lists if len(values) > 1)
    out = []
    for method in methods:
        combos = [()]
        for dest, values in lists:
            combos = [c + ((dest, v),) for c in combos for v in values]
        out += [Setting(method, combo, swept) for combo in combos]
    return out


def check_size(runs, seeds, confirmed):
    """Refuse a sweep of more than MAX_RUNS runs unless --yes."""
    total = runs * seeds
    if total > MAX_RUNS and not confirmed:
        raise EhftError("--seeds/--method/--lr-stage1/--lr-stage2/--batch-size: the sweep is "
                        "%d runs (%d settings x %d seeds), more than %d; pass --yes to run it"
                        % (total, runs, seeds, MAX_RUNS))
