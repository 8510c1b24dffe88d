"""The EH-FT paper's diagnostics on a set of finished runs, as JSON-ready dicts.

- feature_drift (Figure 1): mean L2 distance between the final-layer <s> features of the
  pretrained backbone and of the finetuned model, over training examples;
- parameter_drift (Figure 5): ‖θ − θ₀‖ of the backbone over the last stage's updates, from the
  `drift` the runs logged (`ehft train --log-drift`);
- heads (Figure 4 and the initial gradient): random, LP and EH-FT stage-1 heads on the
  pretrained backbone: t-SNE of their hidden layer on dev examples, how well it separates the
  labels (silhouette), and the gradient norm each sends into the backbone at the start;
- convergence (Figure 7): training loss and accuracy over total updates, per method and
  stage-1 share;
- share_ablation (Figure 6a): dev metric against the stage-1 share of a fixed total.
"""

import collections
import math

import numpy as np
import torch

from ...data.task_table import RANKING, REGRESSION
from ..report.stats import mean_std
from .models import Built
from .runs import AnalyzeError, is_ehft, training_curve


def _summary(values):
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "seeds": len(values)}


def _by_task(runs):
    tasks = collections.defaultdict(list)
    for run in runs:
        tasks[run.task].append(run)
    return dict(sorted(tasks.items()))


def _reference(run, device):
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
    result = {}
    settings = {"split": "train", "examples": examples}
    for task, task_runs in _by_task(runs).items():
        kept = {r.path: r.measured("feature_drift", dict(settings, original=r.config.checkpoint))
                for r in task_runs if not r.final_checkpoint()}
        measurable = [r for r in task_runs if r.final_checkpoint() or kept.get(r.path)]
        if not measurable:
            log("feature drift: %s: no run kept its final checkpoint, skipped" % task)
            continue
        before = {}
        per_label = collections.defaultdict(dict)
        counts = set()
        for run in sorted(measurable, key=lambda r: (r.label, r.seed)):
            original = run.config.checkpoint
            if kept.get(run.path):
                value = kept[run.path]
                log("feature drift: %s %s seed %d: %.3f, as measured before its checkpoint "
                    "was deleted" % (task, run.label, run.seed, value["mean"]))
            else:
                value = _drift(run, before, examples, batch_size, device, log)
                _remember(run, "feature_drift", dict(settings, original=original), value, log)
                log("feature drift: %s %s seed %d: %.3f over %d examples"
                    % (task, run.label, run.seed, value["mean"], value["examples"]))
            per_label[run.label][run.seed] = value["mean"]
            counts.add(value["examples"])
        result[task] = {"examples": max(counts), "split": "train", "methods": {
            label: dict(_summary(list(seeds.values())), by_seed=seeds)
            for label, seeds in per_label.items()}}
    return result


def _drift(run, before, examples, batch_size, device, log):
    """{"mean": mean feature distance, "examples": how many} on the run's final checkpoint;
    `before` caches the pretrained backbone's features per checkpoint."""
    original = run.config.checkpoint
    if original not in before:
        log("feature drift: %s: features of the pretrained backbone %s" % (run.task, original))
        before[original] = _features_by_id(_reference(run, device), "train", examples,
                                           batch_size)
    built = Built(run.commands[run.stages[-1]], run.path, device=device)
    after = _features_by_id(built.load(run.final_checkpoint()), "train", examples, batch_size)
    ids = sorted(after)
    distance = torch.stack([(after[i] - before[original][i]).norm() for i in ids])
    return {"mean": float(distance.mean()), "examples": len(ids)}


def _remember(run, name, settings, value, log):
    """Keeps the value in the run directory, for when its checkpoints are gone; a run
    directory that cannot be written only loses that."""
    try:
        run.record_measured(name, settings, value)
    except OSError as e:
        log("%s: %s: not kept in the run directory (%s)" % (name, run.path, e))


def parameter_drift(runs):
    """Runs that logged `drift`: its curve over the last stage's updates, mean over seeds."""
    result = {}
    for task, task_runs in _by_task(runs).items():
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
            "final": _summary([c[max(c)] for c in seed_curves])}


def convergence(runs):
    result = {}
    for task, task_runs in _by_task(runs).items():
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
    for task, task_runs in _by_task(runs).items():
        groups = collections.defaultdict(lambda: collections.defaultdict(list))
        metric = None
        for run in task_runs:
            score = run.dev_score() if is_ehft(run.method) and run.share is not None else None
            if score:
                metric = score[0]
                groups[run.method][round(run.share, 4)].append(score[1])
        entry = {method: {"%g" % share: _summary(values)
                          for share, values in sorted(shares.items())}
                 for method, shares in sorted(groups.items()) if len(shares) > 1}
        if entry:
            result[task] = {"metric": metric, "methods": entry}
    return result


def _head_sources(task_runs):
    """(label, seed, head file or None, run or None) to compare: one random head per seed
    (no file, no run), and every stage-1 head (LP-FT's linear probe, the EH-FT methods'),
    its file None where it was deleted."""
    sources = [("random", seed, None, None) for seed in sorted({r.seed for r in task_runs})]
    for run in sorted(task_runs, key=lambda r: (r.label, r.seed)):
        if len(run.stages) > 1 and (run.method == "lp-ft" or is_ehft(run.method)):
            name = "LP" if run.method == "lp-ft" else "%s stage 1" % run.label
            sources.append((name, run.seed, run.handed_over_head(), run))
    return sources


def heads(runs, examples, batch_size, grad_batches, device, log):
    """Each stage-1 head measured on the pretrained backbone and kept in its run's
    measured.json (its gradient norm, and the t-SNE of the first seed of each label); a run
    whose head file was deleted since gives what was kept (same settings)."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import silhouette_score

    result = {}
    for task, task_runs in _by_task(runs).items():
        def settings(run):
            return {"examples": examples, "batch_size": batch_size,
                    "grad_batches": grad_batches, "original": run.config.checkpoint}

        kept = {(label, seed): run.measured("heads", settings(run))
                for label, seed, path, run in _head_sources(task_runs)
                if run is not None and path is None}
        sources = [s for s in _head_sources(task_runs)
                   if s[3] is None or s[2] or kept.get(s[:2])]
        if all(run is None for *_, run in sources):
            log("heads: %s: no stage-1 head to compare with a random one, skipped" % task)
            continue
        built = _reference(min(task_runs, key=lambda r: r.seed), device)
        grads = collections.defaultdict(dict)
        tsne = {}
        for label, seed, path, run in sources:
            if kept.get((label, seed)):
                value = kept[label, seed]
                log("heads: %s %s seed %d: initial backbone gradient norm %.4g, as measured "
                    "before its head file was deleted" % (task, label, seed, value["gradient"]))
                grads[label][seed] = value["gradient"]
                if label not in tsne and "tsne" in value:
                    tsne[label] = value["tsne"]
                continue
            if path is None:
                torch.manual_seed(seed)  # nn.Linear's own init, as a newly registered head
                _reinit(built.head)
            else:
                built.load_head(path)
            norms = [built.backbone_gradient_norm(sample) for sample in
                     built.batches("train", grad_batches * batch_size, batch_size)]
            value = {"gradient": sum(norms) / len(norms)}
            grads[label][seed] = value["gradient"]
            log("heads: %s %s seed %d: initial backbone gradient norm %.4g"
                % (task, label, seed, value["gradient"]))
            if label not in tsne and built.task.kind != RANKING:
                value["tsne"] = tsne[label] = _tsne_entry(
                    *_hidden(built, examples, batch_size), built.task.kind, TSNE,
                    silhouette_score)
            if run is not None:
                _remember(run, "heads", settings(run), value, log)
        result[task] = {
            "gradient": {"batches": grad_batches, "batch_size": batch_size,
                         "methods": {label: dict(_summary(list(s.values())), by_seed=s)
                                     for label, s in grads.items()}},
            # the paper's direction (§4): how many times larger a head's gradient is than a
            # random head's; random_over is the same the other way round
            "over_random": {label: _ratio(s, grads["random"]) for label, s in grads.items()
                            if label != "random"},
            "random_over": {label: _ratio(grads["random"], s) for label, s in grads.items()
                            if label != "random"},
        }
        if tsne:
            result[task]["tsne"] = {"split": "valid", **tsne}
    return result


def _reinit(head):
    for module in head.modules():
        if isinstance(module, torch.nn.Linear):
            module.reset_parameters()


def _ratio(numerator, denominator):
    """Mean over the seeds both have of numerator's norm / denominator's ({seed: norm})."""
    seeds = sorted(set(numerator) & set(denominator))
    if not seeds:
        return None
    return sum(numerator[s] / denominator[s] for s in seeds) / len(seeds)


def _hidden(built, examples, batch_size):
    ids, rows, targets = [], [], []
    for sample in built.batches("valid", examples, batch_size):
        ids += sample["id"].tolist()
        rows.append(built.head_hidden(sample).cpu())
        targets += sample["target"].view(-1).tolist()
    order = np.argsort(ids)
    return np.concatenate([r.numpy() for r in rows])[order], np.asarray(targets)[order]


def _tsne_entry(x, y, kind, TSNE, silhouette_score):
    """The 2-d t-SNE of one head's hidden layer `x` (labels `y`), and the labels' silhouette
    in the hidden space itself (t-SNE distorts distances)."""
    perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
    xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=perplexity).fit_transform(x)
    entry = {"points": np.round(xy.astype(float), 3).tolist(), "targets": y.tolist(),
             "perplexity": perplexity}
    if kind != REGRESSION and len(set(y.tolist())) > 1:
        entry["silhouette"] = float(silhouette_score(x, y))
    return entry


def tidy(value):
    """NaN and infinities are not JSON; they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): tidy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tidy(v) for v in value]
    return value
