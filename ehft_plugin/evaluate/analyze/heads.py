"""The heads diagnostic (the EH-FT paper's Figure 4 and its initial-gradient argument): one
random head per seed, LP-FT's linear probe and each EH-FT method's stage-1 head, on the
pretrained backbone: the gradient norm each sends into the backbone at the first step, and the
t-SNE of its hidden layer on dev examples with the labels' silhouette there. What each
stage-1 head gives is kept in its run's measured.json, for when the head file is deleted."""

import collections

import numpy as np
import torch

from ...data.task_table import RANKING, REGRESSION
from .diagnostics import by_task, reference, remember, summary
from .runs import is_ehft


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

    def settings(run):
        return {"examples": examples, "batch_size": batch_size, "grad_batches": grad_batches,
                "original": run.config.checkpoint}

    result = {}
    for task, task_runs in by_task(runs).items():
        sources = _head_sources(task_runs)
        kept = {(label, seed): run.measured("heads", settings(run))
                for label, seed, path, run in sources if run is not None and path is None}
        sources = [s for s in sources if s[3] is None or s[2] or kept.get(s[:2])]
        if all(run is None for *_, run in sources):
            log("heads: %s: no stage-1 head to compare with a random one, skipped" % task)
            continue
        built = reference(min(task_runs, key=lambda r: r.seed), device)
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
                remember(run, "heads", settings(run), value, log)
        result[task] = {
            "gradient": {"batches": grad_batches, "batch_size": batch_size,
                         "methods": {label: dict(summary(list(s.values())), by_seed=s)
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
