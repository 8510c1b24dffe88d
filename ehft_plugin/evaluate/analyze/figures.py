"""PNG figures of the diagnostics; each takes the JSON-ready dict diagnostics.py made."""

import os

from ...data.task_table import display_name
from ..report.plots import pyplot, save_figure


def _name(task):
    return display_name(task)


def feature_drift(result, out_dir):
    plt = pyplot()
    tasks = list(result)
    labels = sorted({label for t in tasks for label in result[t]["methods"]})
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.5 * len(tasks) + 3), 4.2))
    for i, label in enumerate(labels):
        xs, ys, errs = [], [], []
        for j, task in enumerate(tasks):
            cell = result[task]["methods"].get(label)
            if cell:
                xs.append(j + (i - (len(labels) - 1) / 2) * width)
                ys.append(cell["mean"])
                errs.append(cell["std"] or 0.0)
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=label)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels([_name(t) for t in tasks])
    ax.set_ylabel("mean L2 distance of <s> features")
    ax.set_title("feature drift from the pretrained backbone (train examples)")
    ax.legend(fontsize=8)
    return [_write(plt, fig, out_dir, "feature_drift.png")]


def parameter_drift(result, out_dir):
    plt = pyplot()
    paths = []
    for task, curves in result.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, curve in curves.items():
            ax.plot(curve["updates"], curve["drift"], label=label)
        ax.set_xlabel("updates of the last stage")
        ax.set_ylabel("‖θ − θ₀‖ of the backbone")
        ax.set_title("%s: distance from the pretrained weights (mean over seeds)" % _name(task))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_write(plt, fig, out_dir, "parameter_drift-%s.png" % task))
    return paths


def heads(result, out_dir):
    plt = pyplot()
    paths = []
    for task, entry in result.items():
        tsne = {k: v for k, v in entry.get("tsne", {}).items() if k != "split"}
        if not tsne:
            continue
        fig, axes = plt.subplots(1, len(tsne), figsize=(4 * len(tsne), 4), squeeze=False)
        for ax, (label, cell) in zip(axes[0], tsne.items()):
            xs, ys = zip(*cell["points"])
            ax.scatter(xs, ys, c=cell["targets"], s=6, cmap="coolwarm")
            silhouette = cell.get("silhouette")
            ax.set_title("%s%s" % (label, "" if silhouette is None
                                   else "\nsilhouette %.4f" % silhouette), fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("%s: t-SNE of the head's hidden layer on dev examples, pretrained backbone"
                     % _name(task), fontsize=10, y=1.08)  # above the two-line panel titles
        paths.append(_write(plt, fig, out_dir, "heads_tsne-%s.png" % task))
    return paths


def convergence(result, out_dir):
    plt = pyplot()
    paths = []
    for task, curves in result.items():
        keys = [k for k in ("loss", "accuracy") if any(k in c for c in curves.values())]
        fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for label, curve in curves.items():
                if key in curve:
                    [line] = ax.plot(curve[key]["updates"], curve[key][key], label=label)
                    for x in curve["stage2_starts"]:
                        ax.axvline(x, color=line.get_color(), linestyle=":", alpha=0.6)
            ax.set_xlabel("updates (both stages; dotted: stage 2 starts)")
            ax.set_ylabel("training " + key)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle("%s: training convergence (mean over seeds)" % _name(task), fontsize=10)
        paths.append(_write(plt, fig, out_dir, "convergence-%s.png" % task))
    return paths


def share_ablation(result, out_dir):
    plt = pyplot()
    paths = []
    for task, entry in result.items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for method, shares in entry["methods"].items():
            xs = [float(s) * 100 for s in shares]
            ax.errorbar(xs, [c["mean"] for c in shares.values()],
                        yerr=[c["std"] or 0.0 for c in shares.values()], marker="o", capsize=2,
                        label=method)
        ax.set_xlabel("stage 1 share of the updates (%)")
        ax.set_ylabel("dev %s" % entry["metric"])
        ax.set_title("%s: stage-1 share at a fixed total" % _name(task))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(_write(plt, fig, out_dir, "share_ablation-%s.png" % task))
    return paths


def _write(plt, fig, out_dir, name):
    path = os.path.join(out_dir, name)
    save_figure(fig, path)
    plt.close(fig)
    return name


PLOTS = {"feature_drift": feature_drift, "parameter_drift": parameter_drift, "heads": heads,
         "convergence": convergence, "share_ablation": share_ablation}
