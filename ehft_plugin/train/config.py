"""One setting of `ehft train` as a typed, frozen value.

`RunConfig.from_options` reads the command's options once, for one setting of its sweep
(single values); `recipes.apply_recipe` returns the config with what a --recipe fills in;
`launcher.plan_runs` adds the resolved method and its planned stages (`PlannedStage`: the
stage, its updates and, for stage 1 of two, its budget rule). The launcher's functions take
(config, stage), --dry-run walks the same stages as a run, and `record(seed)` is the
configuration run.json holds.
"""

import os
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Optional, Tuple

from .methods import Method, Stage
from .rundir.record import RecordedConfig, StageRecord
from .stage1 import PLATEAU, RATIO, Stage1Budget


@dataclass(frozen=True)
class PlannedStage:
    index: int
    stage: Stage
    updates: int  # a plateau stage 1's cap
    budget: Optional[Stage1Budget] = None  # stage 1 of a two-stage method: its rule

    @property
    def name(self):
        return self.stage.name

    @property
    def capped(self):
        """Its updates are a cap: it stops on a plateau of its dev metric."""
        return self.budget is not None and self.budget.rule == PLATEAU


def stage_updates(total, budget):
    """Updates of each stage: one stage gets `total`; stage 1 of two gets its budget's, stage 2
    the total (less stage 1's with the ratio rule, whose total covers both)."""
    if budget is None:
        return [total]
    return [budget.updates, total - budget.updates if budget.rule == RATIO else total]


@dataclass(frozen=True)
class RunConfig:
    # the command's options, one sweep setting (None: not given, a default or recipe decides)
    method: str
    data: str
    checkpoint: str
    save_dir: str
    seeds: Tuple[int, ...] = (1,)
    total_updates: Optional[int] = None
    total_epochs: Optional[float] = None
    recipe: Optional[str] = None
    stage1_ratio: Optional[float] = None
    stage1_updates: Optional[int] = None
    stage1_epochs: Optional[float] = None
    stage1_patience: Optional[int] = None
    stage1_max_epochs: Optional[float] = None
    stage1_head: Optional[str] = None
    lr_stage1: Optional[float] = None
    lr_stage2: Optional[float] = None
    batch_size: Optional[int] = None
    warmup_ratio: Optional[float] = None
    arch: Optional[str] = None  # planned: the checkpoint's, unless given
    head_type: str = "ehft"
    tensorboard: Optional[str] = None
    wandb_project: Optional[str] = None
    log_drift: bool = False
    display: Optional[str] = None
    progress_every: Optional[int] = None
    overwrite: bool = False
    fairseq_args: Tuple[str, ...] = ()
    # planned (launcher.plan_runs)
    setting: str = ""  # the sweep's name for this setting's values, "" for none
    task: str = ""
    metric: str = ""  # the task's first metric: best checkpoint, early stopping
    dims: Mapping[str, object] = field(default_factory=dict)  # the checkpoint's model sizes
    resolved: Optional[Method] = None
    stages: Tuple[PlannedStage, ...] = ()

    @classmethod
    def from_options(cls, opts):
        """The config of one setting's options (an argparse namespace of `ehft train`)."""
        values = {}
        for f in fields(cls):
            value = getattr(opts, f.name, None)
            if value is not None:
                values[f.name] = tuple(value) if f.name in ("seeds", "fairseq_args") else value
        return cls(**values)

    def replace(self, **changes):
        return replace(self, **changes)

    def planned(self, method, budget, **changes):
        """The config with `method` resolved and its stages' updates laid out."""
        updates = stage_updates(self.total_updates, budget)
        stages = tuple(PlannedStage(i, stage, n, budget if i == 0 else None)
                       for i, (stage, n) in enumerate(zip(method.stages, updates)))
        return replace(self, resolved=method, stages=stages, **changes)

    @property
    def budget(self):
        """A two-stage method's Stage1Budget, None for one stage."""
        return self.stages[0].budget if self.stages else None

    def record(self, seed):
        """The configuration run.json holds for one seed (a relaunch with another one is
        refused, or replaces the run with --overwrite)."""
        method = self.resolved
        return RecordedConfig(
            method=method.name, data=os.path.abspath(self.data),
            checkpoint=os.path.abspath(self.checkpoint), seed=seed,
            total_updates=self.total_updates, updates=tuple(s.updates for s in self.stages),
            arch=self.arch, total_epochs=self.total_epochs, log_drift=self.log_drift,
            head_type=self.head_type, batch_size=self.batch_size,
            warmup_ratio=self.warmup_ratio, fairseq_args=tuple(self.fairseq_args),
            stages=tuple(StageRecord(s.name, s.peft, s.lr, bool(s.reserve),
                                     s.child_share or None, s.fisher_clip or None)
                         for s in method.stages),
            stage1=self.budget.record() if self.budget is not None else None,
            setting=self.setting)
