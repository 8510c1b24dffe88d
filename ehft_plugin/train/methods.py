"""The method zoo: every `--method` name as a sequence of stages, defaults in one table.

A stage is a PEFT plan (see peft/plan.py), a learning rate and a share of the total update
budget. Two-stage methods hand over only the head (EH-FT paper §2.2): stage 2 starts from
the original checkpoint's backbone. The -reserve variants (Table 3) hand over the head and
stage 1's PEFT parameters, and stage 2 trains everything, those modules included.

Defaults follow the EH-FT paper (§3.2): 5e-4 for BitFit, LoRA and linear probing, 5e-3 for
prefix-tuning, LoRA r=32, prefix length 16, full finetuning at 1e-5 (RoBERTa-large), stage 1
taking 10% of the updates. Its other baselines of Table 1 finetune fully at the same rate:
mixout(p=P) (Lee et al. 2020, P searched in {0.7, 0.8, 0.9}) and child-tuning-d(p=P) (Xu et
al. 2021, P searched in {0.1, 0.2, 0.3}; the child is chosen before the stage, see
child_tuning.py).
"""

import re
from dataclasses import dataclass, replace
from typing import Tuple

from ..errors import EhftError
from ..peft.plan import Full, LoRA, Plan, PlanError, Prefix, Stratum, format_plan, parse_plan

FULL_FINETUNING_LR = 1e-5
STAGE1_SHARE = 0.1

# single-stage PEFT methods: name -> (plan, learning rate)
PEFT_DEFAULTS = {
    "lp": ("head", 5e-4),
    "bitfit": ("bitfit", 5e-4),
    "lora": ("0-{last}:lora(r=32,alpha=32,targets=q+v)", 5e-4),
    "prefix": ("0-{last}:prefix(len=16)", 5e-3),
}
RESERVE = "-reserve"
STRATA_LR = 5e-4  # spafit-* and explicit strata
TOPK_LR = FULL_FINETUNING_LR  # top-K layers are finetuned fully
CHILD_TUNING_SHARE = 0.3


class MethodError(EhftError, ValueError):
    """An unknown or malformed --method."""


@dataclass(frozen=True)
class Stage:
    name: str  # directory name of the stage
    peft: str  # --peft plan
    lr: float
    share: float  # of the total updates
    head_from: str = ""  # stage whose final head this stage starts from ("" = new head)
    reserve: bool = False  # also start from that stage's PEFT parameters (-reserve variants)
    child_share: float = 0.0  # Child-Tuning_D: the share of encoder-layer weights updated
    fisher_clip: float = 0.0  # Child-Tuning_D: each tensor's gradient norm clipped to this in
    #                           the Fisher pass (0: not clipped)


@dataclass(frozen=True)
class Method:
    name: str
    stages: Tuple[Stage, ...]

    @property
    def two_stage(self):
        return len(self.stages) == 2


def _single(spec: str, num_layers: int):
    """(plan, lr) of a single-stage method name, or None if it is not one."""
    if spec in PEFT_DEFAULTS:
        plan, lr = PEFT_DEFAULTS[spec]
        return plan.format(last=num_layers - 1), lr
    written = re.fullmatch(r"(bitfit|lora|prefix)\s*\(.*\)", spec)
    if written:  # lora(r=8,targets=q+k+v): that method on every layer at its table's rate
        return spec, PEFT_DEFAULTS[written.group(1)][1]
    if re.fullmatch(r"mixout\s*(\(.*\))?", spec):  # full finetuning with mixout
        return spec, FULL_FINETUNING_LR
    if re.fullmatch(r"topk-\d+", spec):
        return spec, TOPK_LR
    if spec.startswith("spafit-") or ":" in spec:
        return spec, STRATA_LR
    return None


def resolve_method(name: str, num_layers: int, stage1_share: float = STAGE1_SHARE) -> Method:
    """The stages of `--method name` for a model with `num_layers` encoder layers."""
    if not 0 < stage1_share < 1:
        raise MethodError("--stage1-ratio %g: expected a number strictly between 0 and 1"
                          % stage1_share)
    if name == "ft":
        stages = (Stage("finetune", "full", FULL_FINETUNING_LR, 1.0),)
    elif name == "lp-ft":  # Kumar et al. 2022: linear probing, then full finetuning
        stages = _two_stage("head", PEFT_DEFAULTS["lp"][1], stage1_share)
    elif name.startswith("ehft-"):
        reserve = name.endswith(RESERVE)
        peft = name[len("ehft-"):len(name) - len(RESERVE) if reserve else None]
        single = _single(peft, num_layers)
        if single is None or peft == "lp" or peft.startswith("mixout"):
            raise MethodError("unknown --method %r; EH-FT takes a PEFT method: ehft-bitfit, "
                              "ehft-lora, ehft-prefix, ehft-spafit-A-B-I|II or ehft-<strata>, "
                              "each optionally with -reserve" % name)
        stages = _two_stage(single[0], single[1], stage1_share)
        if reserve:
            stages = _reserving(stages, num_layers, name)
    elif re.fullmatch(r"child-tuning-d\s*(\(.*\))?", name):
        share, clip = _child_args(name)
        stages = (Stage("finetune", "full", FULL_FINETUNING_LR, 1.0, child_share=share,
                        fisher_clip=clip),)
    else:
        single = _single(name, num_layers)
        if single is None:
            raise MethodError(
                "unknown --method %r; expected one of: ft, lp, lp-ft, bitfit, lora, prefix, "
                "mixout, child-tuning-d, topk-K, spafit-A-B-I|II, a method with arguments such "
                "as 'lora(r=8)', 'mixout(p=0.8)' or 'child-tuning-d(p=0.2)', "
                "a strata spec such as '0-5:frozen,6-11:bitfit', "
                "or ehft-<any of the PEFT methods>" % name)
        stages = (Stage("finetune", single[0], single[1], 1.0),)
    for stage in stages:
        try:
            parse_plan(stage.peft, num_layers)
        except PlanError as e:
            raise MethodError("--method %s: %s" % (name, e)) from None
    return Method(name, stages)


def _child_args(name):
    """(p, fisher_clip) of child-tuning-d(p=P,fisher_clip=C) (defaults CHILD_TUNING_SHARE and
    0: no clipping)."""
    args = re.fullmatch(r"child-tuning-d\s*(?:\((.*)\))?", name).group(1)
    values = {"p": CHILD_TUNING_SHARE, "fisher_clip": 0.0}
    for part in (args or "").split(","):
        if not part.strip():
            continue
        key, eq, value = part.partition("=")
        key = key.strip()
        if key not in values or not eq:
            raise MethodError("--method %s: child-tuning-d takes p (the share of encoder-layer "
                              "weights updated) and fisher_clip (each tensor's gradient norm "
                              "in the Fisher pass, 0 = none), e.g. "
                              "child-tuning-d(p=0.1,fisher_clip=1.0)" % name)
        try:
            values[key] = float(value)
        except ValueError:
            values[key] = float("nan")
    if not 0 < values["p"] <= 1:
        raise MethodError("--method %s: p must be a number with 0 < p <= 1" % name)
    if not values["fisher_clip"] >= 0:
        raise MethodError("--method %s: fisher_clip must be a number >= 0" % name)
    return values["p"], values["fisher_clip"]


def _two_stage(peft, lr, share):
    return (Stage("stage1", peft, lr, share),
            Stage("stage2", "full", FULL_FINETUNING_LR, 1 - share, head_from="stage1"))


def _reserving(stages, num_layers, name):
    first, second = stages
    try:
        kept = reserve_plan(parse_plan(first.peft, num_layers))
    except PlanError as e:
        raise MethodError("--method %s: %s" % (name, e)) from None
    return first, replace(second, peft=format_plan(kept), reserve=True)


def reserve_plan(plan: Plan) -> Plan:
    """Stage 2 of a -reserve variant (EH-FT paper Table 3): full finetuning that keeps stage
    1's LoRA and prefix modules (they go on training); BitFit needs no module, its biases
    are simply carried over."""
    strata = tuple(Stratum(s.first, s.last, (Full(),) + tuple(
        m for m in s.methods if isinstance(m, (LoRA, Prefix)))) for s in plan.strata)
    return Plan(strata, plan.num_layers, train_embeddings=True)


def with_learning_rates(method: Method, stage1_lr=None, stage2_lr=None) -> Method:
    """Override the table's learning rates (--lr-stage1 / --lr-stage2; single stages use the
    stage-1 flag unless they are plain finetuning)."""
    stages = []
    for i, stage in enumerate(method.stages):
        override = stage2_lr if _rate_flag(i, stage) == "lr_stage2" else stage1_lr
        stages.append(replace(stage, lr=override) if override else stage)
    return replace(method, stages=tuple(stages))


def _rate_flag(index, stage):
    # full finetuning (FT, stage 2, mixout, Child-Tuning) takes the stage-2 rate
    finetunes = stage.peft == "full" or stage.peft.startswith("mixout")
    return "lr_stage2" if index == 1 or finetunes else "lr_stage1"


def rate_flags(method: Method):
    """The learning-rate flags (lr_stage1, lr_stage2) that change `method`'s training."""
    return {_rate_flag(i, stage) for i, stage in enumerate(method.stages)}


def split_updates(total: int, method: Method):
    """Updates per stage: stage 1 gets round(share * total), stage 2 the rest (same total)."""
    if total <= 0:
        raise MethodError("--total-updates %d: expected > 0" % total)
    if not method.two_stage:
        return [total]
    first = stage1_share_updates(total, method.stages[0].share)
    return [first, total - first]


def stage1_share_updates(total: int, share: float) -> int:
    """Stage 1's updates when it takes `share` of `total` (--stage1-ratio); stage 2 must keep
    at least one."""
    first = max(1, int(round(share * total)))
    if first >= total:
        raise MethodError("--total-updates %d is too small to give both stages an update" % total)
    return first
