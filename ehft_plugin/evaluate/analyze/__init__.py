"""`ehft analyze`: the EH-FT paper's diagnostics on runs of `ehft train`, as PNG and JSON.

    runs = find_runs(["runs/"])                  # SAVE_DIR/TASK/METHOD/seedK/run.json ...
    analyze(runs, "analysis/")                   # analysis.json, analysis.md, *.png

What each diagnostic needs from a run:
  feature_drift    the final checkpoint (checkpoint_last.pt of the last stage) and the data
  heads            stage1/head.safetensors of lp-ft / ehft-* runs, the pretrained checkpoint
  parameter_drift  `drift` in train.log: trained with `ehft train --log-drift`
  convergence      train.log (any run)
  share_ablation   one EH-FT method trained with two or more --stage1-ratio values
A diagnostic with nothing to work on is left out of the output and says why on stderr.
"""

import json
import sys

from ...atomic import atomic_dir, write_file
from .runs import AnalyzeError, check_runs, find_runs

DIAGNOSTICS = ("feature_drift", "parameter_drift", "heads", "convergence", "share_ablation")
EMPTY = {"parameter_drift": "no run logged drift (train with `ehft train --log-drift`)",
         "share_ablation": "no EH-FT method was trained with two or more --stage1-ratio values",
         "feature_drift": "no run kept its final checkpoint (or a feature drift measured on it)",
         "heads": "no lp-ft or ehft-* run left a stage-1 head (or what was measured on it)"}


def _log(message):
    print("ehft analyze: " + message, file=sys.stderr, flush=True)


def analyze(runs, out, only=DIAGNOSTICS, examples=512, batch_size=32, grad_batches=4,
            device="cpu", how="", log=_log):
    """Computes the diagnostics in `only` and writes them to `out` (replaced as a whole,
    once everything is computed). Returns the JSON written to out/analysis.json."""
    from . import diagnostics, figures, heads  # torch, sklearn, matplotlib: only when analysing

    runs = check_runs([r for r in runs if r.finished()])
    if not runs:
        raise AnalyzeError("none of the runs has finished")
    steps = {
        "feature_drift": lambda: diagnostics.feature_drift(runs, examples, batch_size, device,
                                                           log),
        "parameter_drift": lambda: diagnostics.parameter_drift(runs),
        "heads": lambda: heads.heads(runs, examples, batch_size, grad_batches, device, log),
        "convergence": lambda: diagnostics.convergence(runs),
        "share_ablation": lambda: diagnostics.share_ablation(runs),
    }
    results = {"how": how, "runs": sorted(r.path for r in runs),
               "settings": {"examples": examples, "batch_size": batch_size,
                            "grad_batches": grad_batches, "device": device}}
    for name in only:
        value = steps[name]()
        if value:
            results[name] = diagnostics.tidy(value)
        else:
            results.setdefault("skipped", {})[name] = EMPTY.get(name, "nothing to analyse")
            log("%s: skipped: %s" % (name, results["skipped"][name]))
    with atomic_dir(out) as tmp:
        results["figures"] = [p for name in only if name in results
                              for p in figures.PLOTS[name](results[name], tmp)]
        write_file(tmp + "/analysis.json", json.dumps(results, indent=1))
        write_file(tmp + "/analysis.md", render_markdown(results))
    return results


def _fmt(cell, digits=3):
    if cell is None:
        return "–"
    std = cell.get("std")
    return ("%.*f" % (digits, cell["mean"]) + ("" if std is None else " ± %.*f" % (digits, std))
            + " (n=%d)" % cell["seeds"])


def _over_random(entry, label):
    """Head / random gradient norm, mean over seeds (reports made before it was stored hold
    each head's norms by seed)."""
    if label in entry.get("over_random", {}):
        return entry["over_random"][label]
    methods = entry["gradient"]["methods"]
    mine, random = methods[label].get("by_seed", {}), methods["random"].get("by_seed", {})
    seeds = sorted(set(mine) & set(random))
    return sum(mine[s] / random[s] for s in seeds) / len(seeds) if seeds else None


def render_markdown(results):
    lines = ["# EH-FT diagnostics", ""]
    if results.get("how"):
        lines += ["Made by: `%s`" % results["how"], ""]
    lines += ["Runs: %d; settings: %s" % (len(results["runs"]), json.dumps(results["settings"])),
              ""]
    if "feature_drift" in results:
        lines += ["## Feature drift (paper Figure 1)", "",
                  "Mean L2 distance between the pretrained and the finetuned backbone's "
                  "final-layer <s> features on training examples (mean ± std over seeds).", "",
                  "| task | method | distance |", "|---|---|---|"]
        for task, entry in results["feature_drift"].items():
            for label, cell in entry["methods"].items():
                lines.append("| %s | %s | %s |" % (task, label, _fmt(cell)))
        lines.append("")
    if "parameter_drift" in results:
        lines += ["## Parameter drift (paper Figure 5)", "",
                  "‖θ − θ₀‖ of the backbone at the end of the last stage.", "",
                  "| task | method | final distance |", "|---|---|---|"]
        for task, curves in results["parameter_drift"].items():
            for label, curve in curves.items():
                lines.append("| %s | %s | %s |" % (task, label, _fmt(curve["final"], 4)))
        lines.append("")
    if "heads" in results:
        lines += ["## Heads on the pretrained backbone (paper Figure 4, initial gradient)", "",
                  "Gradient norm reaching the backbone at the first step, mean over the first "
                  "batches of the training set; head / random: how many times larger this "
                  "head's is than a random head's (mean over seeds). The EH-FT paper (§4) finds "
                  "the PEFT-initialised head's initial gradients larger than a random head's, "
                  "by about two orders of magnitude: a ratio above 1 points its way. Silhouette "
                  "of the labels in the head's hidden layer (dev).", "",
                  "| task | head | backbone gradient norm | head / random | silhouette |",
                  "|---|---|---|---|---|"]
        for task, entry in results["heads"].items():
            methods = entry["gradient"]["methods"]
            for label, cell in methods.items():
                ratio = None if label == "random" else _over_random(entry, label)
                silhouette = entry.get("tsne", {}).get(label, {}).get("silhouette")
                lines.append("| %s | %s | %s | %s | %s |" % (
                    task, label, _fmt(cell, 4), "–" if ratio is None else "%.1f×" % ratio,
                    "–" if silhouette is None else "%.4f" % silhouette))
        lines.append("")
    if "share_ablation" in results:
        lines += ["## Stage-1 share (paper Figure 6a)", "",
                  "| task | method | stage-1 share | dev metric |", "|---|---|---|---|"]
        for task, entry in results["share_ablation"].items():
            for method, shares in entry["methods"].items():
                for share, cell in shares.items():
                    lines.append("| %s | %s | %.0f%% | %s %s |" % (
                        task, method, 100 * float(share), entry["metric"], _fmt(cell, 2)))
        lines.append("")
    if "convergence" in results:
        lines += ["## Convergence (paper Figure 7)", "",
                  "Training loss and accuracy over updates: convergence-TASK.png.", ""]
    for name, why in results.get("skipped", {}).items():
        lines.append("- %s: not made: %s" % (name, why))
    if results.get("figures"):
        lines += ["", "Figures: " + ", ".join(results["figures"])]
    return "\n".join(lines) + "\n"


__all__ = ["analyze", "find_runs", "AnalyzeError", "DIAGNOSTICS"]
