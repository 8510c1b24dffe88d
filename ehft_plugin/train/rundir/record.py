"""The configuration run.json holds, as a typed value: `RecordedConfig` (one seed's resolved
settings) with a `StageRecord` per stage.

`RunConfig.record(seed)` builds one; `to_dict` is what run.json stores (keys in a fixed order,
optional ones only when set, so a relaunch with the same settings writes the same bytes);
`from_dict` reads one back, run.json files of every earlier version included (a key they lack
takes its default), and refuses one that lacks what every run.json holds."""

from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from .files import RunError


@dataclass(frozen=True)
class StageRecord:
    name: str
    peft: str = ""
    lr: Optional[float] = None
    reserve: bool = False  # a -reserve variant's stage 1: its PEFT parameters go on to stage 2
    child_share: Optional[float] = None  # Child-Tuning_D's share of the backbone
    fisher_clip: Optional[float] = None  # Child-Tuning_D's Fisher pass's gradient clipping

    def to_dict(self):
        out = {"name": self.name, "peft": self.peft, "lr": self.lr}
        if self.reserve:
            out["reserve"] = True
        if self.child_share:
            out["child_share"] = self.child_share
        if self.fisher_clip:
            out["fisher_clip"] = self.fisher_clip
        return out

    @classmethod
    def from_dict(cls, value):
        return cls(name=value["name"], peft=value.get("peft", ""), lr=value.get("lr"),
                   reserve=bool(value.get("reserve", False)),
                   child_share=value.get("child_share"), fisher_clip=value.get("fisher_clip"))


@dataclass(frozen=True)
class RecordedConfig:
    method: str
    seed: int
    stages: Tuple[StageRecord, ...]
    data: Optional[str] = None
    checkpoint: Optional[str] = None
    total_updates: Optional[int] = None
    updates: Tuple[int, ...] = ()  # each stage's --max-update (a plateau stage 1's cap)
    arch: Optional[str] = None
    total_epochs: Optional[float] = None
    log_drift: bool = False
    head_type: Optional[str] = None
    batch_size: Optional[int] = None
    warmup_ratio: Optional[float] = None
    fairseq_args: Tuple[str, ...] = ()
    stage1: Optional[Mapping[str, object]] = None  # stage 1's budget rule (Stage1Budget.record)
    setting: str = ""  # the sweep setting's directory name
    extra: Mapping[str, object] = field(default_factory=dict)  # keys this version does not know

    def to_dict(self):
        out = {"method": self.method}
        # a run always records its data and checkpoint; a record made by hand (tests) may not
        out.update({k: v for k, v in (("data", self.data), ("checkpoint", self.checkpoint))
                    if v is not None})
        out.update({"seed": self.seed, "total_updates": self.total_updates,
                    "updates": list(self.updates), "arch": self.arch})
        if self.total_epochs is not None:
            out["total_epochs"] = self.total_epochs
        if self.log_drift:
            out["log_drift"] = True
        out.update({"head_type": self.head_type, "batch_size": self.batch_size,
                    "warmup_ratio": self.warmup_ratio, "fairseq_args": list(self.fairseq_args),
                    "stages": [s.to_dict() for s in self.stages]})
        if self.stage1 is not None:
            out["stage1"] = dict(self.stage1)
        if self.setting:
            out["setting"] = self.setting
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, value, path="run.json"):
        """The config of a run.json's "config"; `path` names the file in errors."""
        if not isinstance(value, dict):
            raise RunError("%s: not a run record of ehft train (missing or wrong 'config')"
                           % path)
        known = {"method", "seed", "stages", "data", "checkpoint", "total_updates", "updates",
                 "arch", "total_epochs", "log_drift", "head_type", "batch_size", "warmup_ratio",
                 "fairseq_args", "stage1", "setting"}
        try:
            return cls(method=str(value["method"]), seed=int(value["seed"]),
                       stages=tuple(StageRecord.from_dict(s) for s in value["stages"]),
                       data=value.get("data"), checkpoint=value.get("checkpoint"),
                       total_updates=value.get("total_updates"),
                       updates=tuple(int(n) for n in value.get("updates") or ()),
                       arch=value.get("arch"), total_epochs=value.get("total_epochs"),
                       log_drift=bool(value.get("log_drift", False)),
                       head_type=value.get("head_type"), batch_size=value.get("batch_size"),
                       warmup_ratio=value.get("warmup_ratio"),
                       fairseq_args=tuple(value.get("fairseq_args") or ()),
                       stage1=value.get("stage1"), setting=value.get("setting") or "",
                       extra={k: v for k, v in value.items() if k not in known})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RunError("%s: not a run record of ehft train (missing or wrong %s)"
                           % (path, e)) from None

    @property
    def stage_names(self):
        return [s.name for s in self.stages]

    @property
    def two_stage(self):
        return len(self.stages) > 1

    @property
    def stage1_rule(self) -> Optional[str]:
        """How stage 1 of a two-stage run was budgeted (plateau, updates, epochs, ratio: the
        ratio rule records nothing), None for one stage."""
        if not self.two_stage:
            return None
        return (self.stage1 or {}).get("rule", "ratio")
