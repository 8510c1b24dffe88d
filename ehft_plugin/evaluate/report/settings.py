"""What a run was trained with, as `ehft report` compares runs: runs of one method on one task
are pooled over seeds only when they share every setting; a sweep's settings are chosen on
dev (`select_on_dev`)."""

import json
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .collect import ReportError, by_task_and_method
from .stats import mean_std

# fairseq-train arguments that change where and how a run logs, not what it learns
_LOGGING = {"--tensorboard-logdir": 1, "--wandb-project": 1, "--azureml-logging": 0,
            "--log-interval": 1, "--log-format": 1, "--log-file": 1, "--no-progress-bar": 0,
            "--num-workers": 1, "--aim-repo": 1, "--aim-run-hash": 1}

# glue_ehft's arguments at their defaults: giving one changes nothing a run learns, so a run
# that names it pools with one that does not (tests check these against GlueEhftConfig)
TASK_DEFAULTS = {"--batch-order": "length"}

NONE = "(none)"  # the value of a setting a run's record lacks

DEV_SELECTION_RULE = (
    "Selected on dev: for each task and method, the setting with the highest mean dev score "
    "over its seeds (ties: the setting with more seeds, then the smaller std, then the first "
    "by name); its seeds are reported. The same dev set chose the setting and scores it, so a "
    "dev-selected score is optimistic: expect a held-out test score to be lower.")


def settings_of(run) -> Dict[str, str]:
    """The run's training settings as {name: value in words}: each stage's plan and rate,
    the updates per stage, stage 1's rule, batch size, warmup, head, and fairseq arguments
    beyond logging. Not compared: the seed, paths, and logging."""
    config = run.config
    out = {}
    for stage in config.stages:
        recorded = stage.to_dict()
        for key in ("peft", "lr", "child_share", "fisher_clip", "reserve"):
            if key in recorded:
                out["%s %s" % (stage.name, key)] = _words(recorded[key])
    out["updates"] = _words(list(config.updates))
    if run.stage1_rule is not None:
        out["stage 1 rule"] = _words(dict(config.stage1 or {"rule": "ratio"}))
    for key in ("batch_size", "warmup_ratio", "head_type"):
        out[key.replace("_", " ")] = _words(getattr(config, key))
    out["fairseq args"] = " ".join(_learning_args(list(config.fairseq_args)))
    return out


def _words(value):
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _learning_args(args):
    """The fairseq arguments that change what a run learns: logging dropped, and glue_ehft's
    arguments given at their defaults (TASK_DEFAULTS)."""
    out, i = [], 0
    while i < len(args):
        name, inline, value = args[i].partition("=")
        if name in _LOGGING:
            i += 1 + (0 if inline else _LOGGING[name])
            continue
        if name in TASK_DEFAULTS:
            given = value if inline else args[i + 1] if i + 1 < len(args) else None
            if given == TASK_DEFAULTS[name]:
                i += 1 if inline else 2
                continue
        out.append(args[i])
        i += 1
    return out


def differing(runs) -> Dict[str, List[str]]:
    """{setting name: its distinct values, in run order ("(none)": a run without it)} over
    settings that differ."""
    words = [settings_of(run) for run in runs]
    out = {}
    for key in {k for w in words for k in w}:
        values = []
        for w in words:
            if w.get(key, NONE) not in values:
                values.append(w.get(key, NONE))
        if len(values) > 1:
            out[key] = values
    return out


def check_poolable(runs):
    """Refuse to pool runs of one method on one task that were trained differently."""
    for (task, method), group in by_task_and_method(runs).items():
        diff = differing(group)
        if diff:
            key, values = sorted(diff.items())[0]
            where = {}
            for run in group:
                where.setdefault(settings_of(run).get(key, NONE), run.path)
            raise ReportError(
                "runs of %s on %s differ in %s (%s): they are not seeds of one setting; pass "
                "--select dev to report the setting with the best mean dev score, or report "
                "them apart" % (method, task, key, "; ".join(
                    "%s in %s" % (value, path) for value, path in where.items())))


@dataclass
class Choice:
    task: str
    method: str
    # per setting: {"setting" (its differing values in words), "seeds", "mean", "std",
    # "chosen"}, in the order of the sweep's labels
    settings: List[dict]


def select_on_dev(runs) -> Tuple[list, List[Choice]]:
    """(the chosen setting's runs of each task and method, the sweep of each); a method with
    one setting is its own choice."""
    chosen, choices = [], []
    for (task, method), group in sorted(by_task_and_method(runs).items()):
        diff = differing(group)
        by_setting = {}
        for run in group:
            words = settings_of(run)
            label = ", ".join("%s=%s" % (k, words.get(k, NONE)) for k in sorted(diff))
            by_setting.setdefault(label, []).append(run)
        rows = []
        for label, members in sorted(by_setting.items()):
            scores = [run.dev_score()[1] for run in members]
            mean, std = mean_std(scores)
            rows.append({"setting": label or "(one setting)",
                         "seeds": sorted(r.seed for r in members), "mean": mean, "std": std,
                         "runs": members})
        best = min(rows, key=lambda r: (-r["mean"], -len(r["seeds"]),
                                        r["std"] if r["std"] is not None else 0.0,
                                        r["setting"]))
        for row in rows:
            row["chosen"] = row is best
        chosen += best["runs"]
        choices.append(Choice(task, method, [{k: v for k, v in r.items() if k != "runs"}
                                             for r in rows]))
    return chosen, choices
