"""`Run`: one run directory of `ehft train` as its readers (`ehft report`, `ehft analyze`)
see it: the recorded configuration and commands, each stage's files, and the dev results."""

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ...data.task_table import column_name, paper_metric
from .files import (DONE_RECORD, HEAD_FILE, LAST_CHECKPOINT, LOG, MEASURED, RUN_RECORD, RunError,
                    read_json, wall_seconds, write_json)
from .logs import train_records
from .record import RecordedConfig

_NOT_METRICS = ("loss", "nll_loss", "ppl", "wps", "wpb", "bsz", "num_updates")


@dataclass
class Run:
    path: str
    task: str
    method: str
    seed: int
    config: RecordedConfig
    commands: Dict[str, List[str]]
    # set by `select`: column -> {metric: value} of the selected validation, and the dev
    # curve [(total updates, paper metric)] over every stage
    cells: Dict[str, Dict[str, float]] = field(default_factory=dict)
    curve: List[Tuple[int, float]] = field(default_factory=list)
    stage_starts: List[int] = field(default_factory=list)  # total updates where stage 2.. start
    shown_stage1: bool = False  # set by analyze where runs of the method differ in stage 1

    @classmethod
    def read(cls, run_dir):
        path = os.path.join(run_dir, RUN_RECORD)
        record = read_json(path)
        if not isinstance(record, dict):
            raise RunError("%s: not a run record of ehft train (not a JSON object)" % path)
        config = RecordedConfig.from_dict(record.get("config"), path)
        return cls(run_dir, record.get("task") or os.path.normpath(run_dir).split(os.sep)[-3],
                   config.method, config.seed, config, record.get("commands") or {})

    @property
    def stages(self) -> List[str]:
        return self.config.stage_names

    @property
    def planned_updates(self) -> List[int]:
        """Each stage's --max-update (a plateau stage 1's cap)."""
        return list(self.config.updates)

    @property
    def updates(self) -> List[int]:
        """The updates each stage trained: done.json's (fewer than planned for a stage 1 that
        stopped on its patience), the planned ones for a stage not finished or recorded before
        done.json kept them."""
        out = []
        for stage, planned in zip(self.stages, self.planned_updates):
            done = self.done(stage)
            trained = done.get("trained_updates") if done else None
            out.append(int(trained) if trained else planned)
        return out

    @property
    def stage1_rule(self) -> Optional[str]:
        """How stage 1 of a two-stage run was budgeted (plateau, updates, epochs, ratio), None
        for one stage."""
        return self.config.stage1_rule

    @property
    def plans(self) -> Tuple[str, ...]:
        """Each stage's --peft plan."""
        return tuple(str(s.peft) for s in self.config.stages)

    @property
    def single_stage_peft(self):
        """Trained in one stage with a parameter-efficient plan (not full finetuning, with or
        without mixout)."""
        return len(self.plans) == 1 and not re.fullmatch(r"full|mixout(\(.*\))?",
                                                         self.plans[0])

    @property
    def share(self) -> Optional[float]:
        """Stage 1's share of the updates of a two-stage method budgeted by --stage1-ratio,
        None for one stage or another stage-1 rule."""
        if self.stage1_rule != "ratio":
            return None
        planned = self.planned_updates
        return planned[0] / sum(planned)

    @property
    def stage1(self) -> Optional[str]:
        """Stage 1's budget in words ("stage 1 10%", "stage 1 to a plateau", ...)."""
        rule = self.stage1_rule
        if rule is None:
            return None
        if rule == "ratio":
            return "stage 1 %.0f%%" % (100 * self.share)
        if rule == "plateau":
            return "stage 1 to a plateau"
        record = self.config.stage1
        if rule == "epochs":
            return "stage 1 %g epochs" % record.get("epochs")
        return "stage 1 %d updates" % record.get("updates")

    @property
    def label(self) -> str:
        """The method; with its stage-1 budget where runs of the method differ in it."""
        return "%s (%s)" % (self.method, self.stage1) if self.shown_stage1 else self.method

    def stage_dir(self, stage):
        return os.path.join(self.path, stage)

    def done(self, stage):
        """The stage's done.json, or None while it has not finished."""
        path = os.path.join(self.stage_dir(stage), DONE_RECORD)
        return read_json(path) if os.path.isfile(path) else None

    def finished(self):
        return all(os.path.isfile(os.path.join(self.stage_dir(s), DONE_RECORD))
                   for s in self.stages)

    def final_checkpoint(self):
        """The model at the end of training (last stage's checkpoint_last.pt), or None when
        the run kept no checkpoints."""
        path = os.path.join(self.stage_dir(self.stages[-1]), LAST_CHECKPOINT)
        return path if os.path.isfile(path) else None

    def measured(self, name, settings):
        """What `ehft analyze` recorded of diagnostic `name` on this run's files (its final
        checkpoint, its stage-1 head) under `settings` (a dict), or None: the value outlives
        the files, so a run whose checkpoints and heads were deleted can still be analysed."""
        path = os.path.join(self.path, MEASURED)
        if not os.path.isfile(path):
            return None
        for entry in read_json(path).get(name, []):
            if entry.get("settings") == settings:
                return entry["value"]
        return None

    def record_measured(self, name, settings, value):
        """Keeps `value` of diagnostic `name` under `settings` in the run's measured.json,
        replacing what was recorded under the same settings."""
        path = os.path.join(self.path, MEASURED)
        record = read_json(path) if os.path.isfile(path) else {}
        entries = [e for e in record.get(name, []) if e.get("settings") != settings]
        record[name] = entries + [{"settings": settings, "value": value}]
        write_json(path, record)

    def handed_over_head(self):
        """stage1/head.safetensors of a two-stage method, or None."""
        if len(self.stages) < 2:
            return None
        path = os.path.join(self.stage_dir(self.stages[0]), HEAD_FILE)
        return path if os.path.isfile(path) else None

    def train_records(self, stage):
        return train_records(os.path.join(self.stage_dir(stage), LOG))

    def select(self, select="best"):
        """Read the dev results: `cells` from the last stage's validation chosen by `select`
        ("best": the best headline metric, fairseq's checkpoint_best; "last": the final
        record), other subsets at that validation's update, and the dev `curve`. Returns
        whether the run has finished (nothing is read when not)."""
        stages = self.stages
        done = {stage: self.done(stage) for stage in stages}
        final = done[stages[-1]]
        if final is None:
            return False
        key = "valid_" + str(final.get("metric"))
        valid = [r for r in final.get("valid", []) if r.get("subset") == "valid" and key in r]
        if not valid:
            raise RunError("%s: holds no validation of the dev set with its metric %r"
                           % (os.path.join(self.stage_dir(stages[-1]), DONE_RECORD),
                              final.get("metric")))
        chosen = max(valid, key=lambda r: float(r[key])) if select == "best" else valid[-1]
        at = chosen.get("valid_num_updates")
        self.cells = {}
        for r in final["valid"]:
            subset = r["subset"]
            if subset == "valid" and r is not chosen:
                continue
            if subset != "valid" and r.get(subset + "_num_updates") != at:
                continue
            self.cells[column_name(self.task, subset)] = _metrics(r, subset)
        metric = paper_metric(self.task, self.cells[self.task], self.headline)
        self.curve, self.stage_starts, offset = [], [], 0
        for stage, n in zip(stages, self.updates):
            for r in (done[stage] or {}).get("valid", []):
                if r.get("subset") == "valid" and "valid_" + metric in r:
                    self.curve.append((offset + int(float(r["valid_num_updates"])),
                                       float(r["valid_" + metric])))
            offset += n
            self.stage_starts.append(offset)
        self.stage_starts.pop()
        return True

    @property
    def headline(self):
        """The metric the run's last stage chose its best validation on (the task's first)."""
        return (self.done(self.stages[-1]) or {}).get("metric")

    def wall_seconds(self):
        """Seconds the run's stages took, start checkpoints, Child-Tuning masks and hand-overs
        included, every launch of a resumed stage counted (see counts_every_launch); None when
        a stage recorded no timings (runs from before stages were timed)."""
        timings = [(self.done(stage) or {}).get("seconds") for stage in self.stages]
        if not all(timings):
            return None
        return sum(wall_seconds(t) for t in timings)

    def counts_every_launch(self):
        """Whether wall_seconds holds every launch of each stage: stages recorded before
        launches were counted hold only their last launch's seconds."""
        return all("launches" in (self.done(stage) or {}) for stage in self.stages)

    def stage1_head(self):
        """What stage 1 of a two-stage run recorded of the head it handed over (dev, best_dev,
        constant_level, at_chance, ...), or None (one stage, or recorded before it was kept)."""
        if len(self.stages) < 2:
            return None
        return (self.done(self.stages[0]) or {}).get("head")

    def dev_score(self):
        """(paper metric, its value at the selected dev validation) or None if unfinished."""
        if not self.select() or self.task not in self.cells:
            return None
        metric = paper_metric(self.task, self.cells[self.task], self.headline)
        return metric, self.cells[self.task][metric]


def _metrics(record, subset):
    """{metric: float} of one fairseq validation record."""
    prefix = subset + "_"
    out = {}
    for key, value in record.items():
        name = key[len(prefix):]
        if not key.startswith(prefix) or name in _NOT_METRICS or name.startswith("best_"):
            continue
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            continue
    return out
