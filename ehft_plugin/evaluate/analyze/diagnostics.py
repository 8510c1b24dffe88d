"""The EH-FT paper's diagnostics on a set of finished runs, as JSON-ready dicts.

- feature_drift (Figure 1): mean L2 distance between the final-layer <s> features of the
  pretrained backbone and of the finetuned model, over training examples;
- parameter_drift (Figure 5): ‖θ − θ₀‖ of the backbone over the last stage's updates, from the
  `drift` the runs logged (`ehft train --log-drift`);
- heads (Figure 4 and the initial gradient; heads.py): random, LP and EH-FT stage-1 heads on
  the pretrained backbone: t-SNE of their hidden layer on dev examples, how well it separates
  the labels (silhouette), and the gradient norm each sends into the backbone at the start;
- convergence (Figure 7): training loss and accuracy over total updates, per method and
  stage-1 share;
- share_ablation (Figure 6a): dev metric against the stage-1 share of a fixed total.
"""

import collections
import math

import torch

from ..report.stats import mean_std
from .models import Built
from .runs import AnalyzeError, is_ehft, training_curve


def summary(values):
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "seeds": len(values)}


def by_task(runs):
    tasks = collections.defaultdict(list)
    for run in runs:
        tasks[run.task].append(run)
    return dict(sorted(tasks.items()))


def reference(run, device):
    """The pretrained backbone the run started from, with a fresh head (seeded by the run)."""
    last = run.commands.get(run.stages[-1])
    if not last:
        raise AnalyzeError("%s: run.json records no command for stage %s"
                           % (run.path, run.stages[-1]))
    built = Built(last, run.path + "/run.json", seed=run.seed, peft="full", device=device)
    return built.load(run.config.checkpoint, strict=False)


def _features_by_id(built, split, limit, batch_size):
    out = {}
    for sample in built.batches(split, limit, batch_size):
        for i, f in zip(sample["id"].tolist(), built.features(sample).cpu()):
            out[i] = f
    return out


def feature_drift(runs, examples, batch_size, device, log):
    """Measured on each run's final checkpoint and kept in the run's measured.json; a run
    whose checkpoints were deleted since gives the kept value (same --examples and
    pretrained checkpoint)."""
    def settings(run):
        return {"split": "train", "examples": examples, "original": run.config.checkpoint}

    result = {}
    for task, task_runs in by_task(runs).items():
        kept = {r.path: r.measured("feature_drift", settings(r))
                for r in task_runs if not r.final_checkpoint()}
        measurable = [r for r in task_runs if r.final_checkpoint() or kept.get(r.path)]
        if not measurable:
            log("feature drift: %s: no run kept its final checkpoint, skipped" % task)
            continue
        before = {}
        per_label = collections.defaultdict(dict)
        counts = set()
        for run in sorted(measurable, key=lambda r: (r.label, r.seed)):
            if kept.get(run.path):
                value = kept[run.path]
                log("feature drift: %s %s seed %d: %.3f, as measured before its checkpoint "
                    "was deleted" % (task, run.label, run.seed, value["mean"]))
            else:
                value = _drift(run, before, examples, batch_size, device, log)
                remember(run, "feature_drift", settings(run), value, log)
                log("feature drift: %s %s seed %d: %.3f over %d examples"
                    % (task, run.label, run.seed, value["mean"], value["examples"]))
            per_label[run.label][run.seed] = value["mean"]
            counts.add(value["examples"])
        result[task] = {"examples": max(counts), "split": "train", "methods": {
            label: dict(summary(list(seeds.values())), by_seed=seeds)
            for label, seeds in per_label.items()}}
    return result


def _drift(run, before, examples, batch_size, device, log):
    """{"mean": mean feature distance, "examples": how many} on the run's final checkpoint;
    `before` caches the pretrained backbone's features per checkpoint."""
    original = run.config.checkpoint
    if original not in before:
        log("feature drift: %s: features of the pretrained backbone %s" % (run.task, original))
        before[original] = _features_by_id(reference(run, device), "train", examples,
                                           batch_size)
    built = Built(run.commands[run.stages[-1]], run.path, device=device)
    after = _features_by_id(built.load(run.final_checkpoint()), "train", examples, batch_size)
    ids = sorted(after)
    distance = torch.stack([(after[i] - before[original][i]).norm() for i in ids])
    return {"mean": float(distance.mean()), "examples": len(ids)}


def remember(run, name, settings, value, log):
    """Keeps the value in the run directory, for when its checkpoints are gone; a run
    directory that cannot be written only loses that."""
    try:
        run.record_measured(name, settings, value)
    except OSError as e:
        log("%s: %s: not kept in the run directory (%s)" % (name, run.path, e))


def parameter_drift(runs):
    """Runs that logged `drift`: its curve over the last stage's updates, mean over seeds."""
    result = {}
    for task, task_runs in by_task(runs).items():
        curves = collections.defaultdict(list)
        for run in task_runs:
            records = [(int(r["num_updates"]), r["drift"])
                       for r in run.train_records(run.stages[-1])
                       if isinstance(r.get("drift"), float)]
            if records:
                curves[run.label].append(dict(records))
        if curves:
            result[task] = {label: _mean_curve(seed_curves, "drift")
                            for label, seed_curves in sorted(curves.items())}
    return result


def _mean_curve(seed_curves, name):
    """{x: y} per seed -> x where every seed has a value, the mean there, and the last
    value of every seed."""
    xs = sorted(set.intersection(*(set(c) for c in seed_curves)))
    return {"updates": xs, name: [sum(c[x] for c in seed_curves) / len(seed_curves) for x in xs],
            "final": summary([c[max(c)] for c in seed_curves])}


def convergence(runs):
    result = {}
    for task, task_runs in by_task(runs).items():
        by_label = collections.defaultdict(list)
        for run in task_runs:
            by_label[run.label].append(run)
        entry = {}
        for label, label_runs in sorted(by_label.items()):
            curves = {}
            for key in ("loss", "accuracy"):
                seed_curves = [dict(training_curve(r, key)) for r in label_runs]
                if all(seed_curves):
                    curves[key] = _mean_curve(seed_curves, key)
            if curves:
                entry[label] = {"stage2_starts": sorted({sum(r.updates[:-1]) for r in label_runs
                                                         if len(r.updates) > 1}),
                                "seeds": len(label_runs), **curves}
        if entry:
            result[task] = entry
    return result


def share_ablation(runs):
    """EH-FT methods run with two or more stage-1 shares: dev metric per share."""
    result = {}
    for task, task_runs in by_task(runs).items():
        groups = collections.defaultdict(lambda: collections.defaultdict(list))
        metric = None
        for run in task_runs:
            score = run.dev_score() if is_ehft(run.method) and run.share is not None else None
            if score:
                metric = score[0]
                groups[run.method][round(run.share, 4)].append(score[1])
        entry = {method: {"%g" % share: summary(values)
                          for share, values in sorted(shares.items())}
                 for method, shares in sorted(groups.items()) if len(shares) > 1}
        if entry:
            result[task] = {"metric": metric, "methods": entry}
    return result


def tidy(value):
    """NaN and infinities are not JSON; they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): tidy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tidy(v) for v in value]
    return value
