"""The figures of `python -m benchmarks.speed` (results.json) and benchmarks/RESULTS.md, from
the rounds it measured (results/speed.json; nothing typed in): each ratio within each round,
the rounds' interval, and the verdict against its target. `python -m benchmarks.speed_report
[OUT]` writes both again from speed.json alone.

Longer than ~300 lines because each target's figure, its interval and the sentence
RESULTS.md says about it are written side by side, so a figure cannot drift from its words."""

import json
import math
import os
import statistics
import sys

from ehft_plugin.atomic import write_file
from ehft_plugin.evaluate.report.stats import mean_interval

TARGETS = {"stage2_vs_fairseq": 0.98, "bitfit_vs_ft": 1.3, "lora_vs_ft": 1.15,
           "prefix_vs_ft": 1.2, "ft_vs_hf": 1.0, "bitfit_vs_hf": 1.0, "lora_vs_hf": 1.0,
           "default_pipeline_vs_hf": 1.5, "mfu": 0.5, "ft_vs_ehft_wall": 1 / 1.05}


def median_rows(rounds):
    """Each configuration's median run over the rounds (the Measurements table), with the
    seq/s of every run."""
    rows = {}
    for name in rounds[0]["measurements"]:
        runs = [r["measurements"][name] for r in rounds if name in r["measurements"]]
        ordered = sorted(runs, key=lambda r: r["sequences_per_s"])
        rows[name] = dict(ordered[(len(ordered) - 1) // 2],
                          runs_sequences_per_s=[r["sequences_per_s"] for r in runs])
    return rows


def figure(per_round, target=None, **raw):
    """A figure measured once per round: its geometric mean over the rounds, the 95% interval
    of that mean (Student's t on the logarithms: a ratio's errors multiply), and against a
    target, met (True), missed (False) or unresolved (None) by the interval."""
    centre, interval = mean_interval([math.log(v) for v in per_round])
    entry = {"value": math.exp(centre), "per_round": per_round, "ci95": None, **raw}
    if interval:
        entry["ci95"] = [math.exp(end) for end in interval]
    if target is not None:
        entry.update(target=target, met=settle(entry["ci95"], target))
    return entry


STOCK = "stock fairseq ft (sentence_prediction)"
CHILD = "plugin child-tuning-d, random batches"
FT, DEFAULT = "plugin ft, random batches", "plugin ft, default pipeline"
# key: (numerator, denominator, figure): a ratio of the two configurations within each round
RATIOS = {
    # stock fairseq adds one more separator per pair: compare tokens, not sequences
    "stage2_vs_fairseq": (FT, STOCK, "tokens_per_s"),
    "bitfit_vs_ft": ("plugin bitfit, random batches", FT, "sequences_per_s"),
    "lora_vs_ft": ("plugin lora, random batches", FT, "sequences_per_s"),
    "prefix_vs_ft": ("plugin prefix, random batches", FT, "sequences_per_s"),
    "ft_vs_hf": (FT, "hf ft, random batches", "sequences_per_s"),
    "bitfit_vs_hf": ("plugin bitfit, random batches", "hf bitfit, random batches",
                     "sequences_per_s"),
    "lora_vs_hf": ("plugin lora, random batches", "hf lora, random batches", "sequences_per_s"),
    "prefix_vs_hf": ("plugin prefix, random batches", "hf prefix, random batches",
                     "sequences_per_s"),
    "default_pipeline_vs_hf": (DEFAULT, "hf ft, random batches", "tokens_per_s"),
    # the EH-FT paper's other baselines (no targets)
    "mixout_vs_ft": ("plugin mixout, random batches", FT, "sequences_per_s"),
    "child_tuning_vs_ft": (CHILD, FT, "sequences_per_s"),
}


def ratio(rounds, numerator, denominator, key, target=None):
    """numerator / denominator of `key` within each round; the medians over rounds as raw
    figures."""
    both = [r["measurements"] for r in rounds]
    return figure([m[numerator][key] / m[denominator][key] for m in both], target, of=key,
                  numerator=statistics.median_low(m[numerator][key] for m in both),
                  denominator=statistics.median_low(m[denominator][key] for m in both))


def ratios(rounds):
    out = {}
    for key, (numerator, denominator, measure) in RATIOS.items():
        if all(numerator in r["measurements"] for r in rounds):  # Mixout and Child-Tuning_D
            out[key] = ratio(rounds, numerator, denominator, measure, TARGETS.get(key))
    default = [r["measurements"][DEFAULT] for r in rounds]
    out["mfu"] = figure(
        [m["mfu"] for m in default], TARGETS["mfu"],
        model_flops_per_s=statistics.median_low(m["model_flops_per_s"] for m in default),
        matmul_peak_flops_per_s=statistics.median_low(m["matmul_peak_flops_per_s"]
                                                      for m in default))
    walls = [r["walls"] for r in rounds]
    out["ft_vs_ehft_wall"] = figure(
        [w["ft"] / w["ehft-bitfit"] for w in walls], TARGETS["ft_vs_ehft_wall"],
        ft_seconds=statistics.median_low(w["ft"] for w in walls),
        ehft_seconds=statistics.median_low(w["ehft-bitfit"] for w in walls),
        where=rounds[-1]["wall_stages"])  # the last round's, stage by stage
    rows = median_rows(rounds)
    for key in ("bitfit_vs_ft", "lora_vs_ft", "prefix_vs_ft", "mixout_vs_ft",
                "child_tuning_vs_ft"):
        name = RATIOS[key][0]
        if key in out:  # frozen weights carry no gradient or optimizer state
            out[key].update(peak_memory_mb=rows[name]["peak_memory_mb"],
                            ft_peak_memory_mb=rows[FT]["peak_memory_mb"],
                            lower_memory=rows[name]["peak_memory_mb"]
                            < rows[FT]["peak_memory_mb"])
    return out


def summary(run, rounds):
    """The run's record with what its rounds say: how many, same batches in all of them, the
    busiest round's share of other processes' CPU."""
    digests = {r["measurements"][n]["batches_digest"] for r in rounds for n in r["measurements"]
               if "random" in n or "stock" in n}
    shares = [r["other_cpu_share"] for r in rounds if r.get("other_cpu_share") is not None]
    return dict(run, rounds=len(rounds), same_batches=len(digests) == 1,
                other_cpu_share=max(shares) if shares else None)


def write_results(out, run, rounds):
    """speed.json (every measurement), results.json (the figures) and RESULTS.md, from the
    rounds so far."""
    os.makedirs(os.path.join(out, "results"), exist_ok=True)
    write_file(os.path.join(out, "results", "speed.json"),
               json.dumps(dict(run=run, rounds=rounds), indent=1) + "\n")
    results = dict(run=summary(run, rounds), **ratios(rounds))
    write_file(os.path.join(out, "results.json"), json.dumps(results, indent=1) + "\n")
    write_markdown(os.path.join(out, "RESULTS.md"), results["run"], rounds, results)
    return results


EXPLAIN = {
    "stage2_vs_fairseq": "plugin full finetuning (EH-FT stage 2) vs stock fairseq "
                         "sentence_prediction, same batches, non-pad tokens/s",
    "bitfit_vs_ft": "plugin BitFit (stage 1) vs plugin full finetuning, same batches",
    "lora_vs_ft": "plugin LoRA r=8 on q,k,v,out (stage 1) vs plugin full finetuning",
    "prefix_vs_ft": "plugin prefix-tuning, 16 tokens (stage 1) vs plugin full finetuning",
    "ft_vs_hf": "plugin vs HF transformers, full finetuning, same batches",
    "bitfit_vs_hf": "plugin vs HF (manual freezing), BitFit, same batches",
    "lora_vs_hf": "plugin vs HF PEFT, LoRA, same batches",
    "prefix_vs_hf": "plugin vs HF PEFT, prefix-tuning, same batches (no target)",
    "default_pipeline_vs_hf": "plugin default pipeline (length-grouped batches) vs HF default "
                              "(random batches padded to the longest), non-pad tokens/s",
    "mfu": "model FLOPs utilisation of the default pipeline on non-pad tokens",
    "ft_vs_ehft_wall": "ehft train wall time: FT / EH-FT(BitFit), same total updates",
    "mixout_vs_ft": "plugin Mixout p=0.9 (every layer) vs plugin full finetuning (no target)",
    "child_tuning_vs_ft": "plugin Child-Tuning_D p_D=0.3 vs plugin full finetuning (no target)",
}


def trainable_note(rows):
    """Why the plugin and HF train different parameter counts under the same method name."""
    gaps = {m: rows["plugin %s, random batches" % m]["trainable_parameters"]
            - rows["hf %s, random batches" % m]["trainable_parameters"]
            for m in ("lora", "prefix", "bitfit")}
    text = ("Trainable parameters, plugin minus HF: " + ", ".join(
        "%s %+d" % (m, gap) for m, gap in gaps.items()) + ".")
    width = math.isqrt(gaps["lora"])
    if gaps["lora"] == gaps["prefix"] > 0 and width * width + width == gaps["lora"]:
        text += (" For LoRA and prefix that is one %d×%d dense layer with its bias: the plugin "
                 "trains its whole classification head (dense + out_proj) with every method, "
                 "as EH-FT's stage 1 must, while HF PEFT trains the classifier and leaves "
                 "BERT's pooler, the equivalent dense layer, frozen. It runs on the first "
                 "token only, so its share of a step's compute is negligible." % (width, width))
        if gaps["bitfit"] == -width:
            text += (" For BitFit, HF's freezing by name also trains the embedding LayerNorm's "
                     "bias (%d), which the plugin's BitFit leaves frozen with the embeddings."
                     % width)
    return text


def meets(value, target):
    """The one test of a figure against its target (1/1.05 is not exact in floats)."""
    return value >= target - 1e-12


def settle(ci95, target):
    """Met only when the 95% interval's lower end clears the target, missed only when its
    upper end is below it; otherwise (or with one round, no interval) unresolved: None."""
    if ci95 is None:
        return None
    if meets(ci95[0], target):
        return True
    return None if meets(ci95[1], target) else False


def verdict(entry):
    if entry.get("target") is None:
        return "—"
    text = {True: "yes", False: "**missed**", None: "unresolved"}[entry["met"]]
    rounds = entry.get("per_round", [])
    if len(rounds) > 1:
        text += " (%d of %d rounds above)" % (
            sum(meets(v, entry["target"]) for v in rounds), len(rounds))
    return text


def interval_text(entry):
    return "%.3f–%.3f" % tuple(entry["ci95"]) if entry.get("ci95") else "—"


def quietness(run):
    share = run.get("other_cpu_share")
    if share is None:
        return "How busy the machine was with other work was not recorded for this run."
    text = ("Other processes used %.1f%% of the machine's CPU while it was measured"
            % (100 * share))
    if share > 0.05:
        return text + ": **the machine was not quiet**, so every figure below is slowed by an " \
                      "unknown and uneven amount; measure again on an idle machine."
    return text + " (a quiet machine)."


def wall_table(where):
    """Where each end-to-end run's seconds went, stage by stage (runs measured before the
    stages recorded their timings have none)."""
    if not where:
        return []
    lines = ["Where the last round's seconds went: writing the stage's start checkpoint, the "
             "fairseq-train process (of which fairseq's training loop, with its validations "
             "and checkpoint saves; the rest is its start-up and shutdown), the hand-over of "
             "stage 1's head; what is left of the wall time is `ehft train`'s own start-up, "
             "checks and reading of the original checkpoint.", "",
             "| run | stage | start checkpoint | fairseq-train | of which training loop | "
             "start-up and shutdown | hand-over |", "|---|---|---|---|---|---|---|"]

    def cell(value):
        return "—" if value is None else "%.1f" % value

    for method, timing in where.items():
        for stage, t in timing["stages"].items():
            process, loop = t.get("fairseq_train"), t.get("training")
            lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                method, stage, cell(t.get("start_checkpoint")), cell(process), cell(loop),
                cell(process - loop if process is not None and loop is not None else None),
                cell(t.get("hand_over"))))
        lines.append("| %s | `ehft train` itself | — | — | — | %s | — |"
                     % (method, cell(timing["launcher"])))
    return lines + [""]


def baselines_note(run, results):
    """Mixout's and Child-Tuning_D's cost beside full finetuning, where they were measured."""
    if "mixout_vs_ft" not in results:
        return []
    mixout, child = results["mixout_vs_ft"], results["child_tuning_vs_ft"]
    mask = run["slices"][-1]["child_mask"]
    return ["The paper's other baselines, against full finetuning on the same batches: Mixout "
            "%.3f× the sequences/s at %.0f MB peak (FT %.0f MB; it keeps the pretrained "
            "weights beside the trained ones), Child-Tuning_D %.3f× at %.0f MB, plus its "
            "Fisher pass before training: %.1f s on %d training examples (`ehft child-mask`)."
            % (mixout["value"], mixout["peak_memory_mb"], mixout["ft_peak_memory_mb"],
               child["value"], child["peak_memory_mb"], mask["seconds"], mask["examples"]),
            ""]


def slices_text(run):
    """How the rounds were run: one command, or the first and each --resume that added some."""
    if len(run.get("slices", [])) < 2:
        return "`%s`" % run["command"]
    return "; ".join("`%s` (%d round%s, %s)" % (
        s["command"], s["rounds"], "" if s["rounds"] == 1 else "s", s["started"][:10])
        for s in run["slices"])


def write_markdown(path, run, rounds, results):
    rows = median_rows(rounds)  # the Measurements table: each configuration's median run
    met = [k for k, e in results.items() if isinstance(e, dict) and e.get("target") is not None]
    counts = {v: sum(results[k]["met"] is v for k in met) for v in (True, False, None)}
    lines = ["# Benchmarks", "",
             "Made by %s on %s (%d threads), torch %s, Python %s. Backbone `%s`, RTE train "
             "pairs truncated to %d tokens, batch %d, %d timed steps after %d warm-up steps, "
             "each configuration in its own process. %d rounds: each runs every "
             "configuration once, in turn (the order reversed every other round), then the "
             "`ehft train` wall-time runs. Same batches across the random-order "
             "configurations in every round (checked by a digest of the timed example ids): "
             "%s."
             % (slices_text(run), run["machine"], run["threads"], run["torch"], run["python"],
                run["backbone"], run["max_length"], run["batch_size"], run["steps"],
                run["warmup"], run["rounds"], "yes" if run["same_batches"] else "NO"), "",
             quietness(run), "",
             "## Targets", "",
             "This machine's speed drifts by 5-30%% from one round to the next, so each ratio is "
             "taken within each round, and the rounds give it a 95%% interval (Student's t on "
             "the logarithms of the per-round ratios; measured: their geometric mean). A target "
             "is met when the interval's lower end clears it, missed when its upper end is "
             "below it, and unresolved otherwise: this run's rounds cannot tell. %d met, %d "
             "missed, %d unresolved." % (counts[True], counts[False], counts[None]), "",
             "| key | what | measured | 95% interval | every round | target | met |",
             "|---|---|---|---|---|---|---|"]
    for key, text in EXPLAIN.items():
        if key not in results:  # a ratio measured only by later runs
            continue
        entry = results[key]
        lines.append("| `%s` | %s | %.3f | %s | %s | %s | %s |" % (
            key, text, entry["value"], interval_text(entry),
            ", ".join("%.3f" % v for v in entry.get("per_round", [])) or "—",
            "≥ %.3f" % entry["target"] if entry.get("target") else "—", verdict(entry)))
    lines += ["", "Lower peak memory than full finetuning (frozen weights carry no gradient or "
              "optimizer state): " + ", ".join(
                  "%s %s (%.0f vs %.0f MB)" % (m, "yes" if results["%s_vs_ft" % m]["lower_memory"]
                                               else "**no**",
                                               results["%s_vs_ft" % m]["peak_memory_mb"],
                                               results["%s_vs_ft" % m]["ft_peak_memory_mb"])
                  for m in ("bitfit", "lora", "prefix")) + ".", ""] + baselines_note(
                      run, results) + [
              "## Measurements", "",
              "| configuration | seq/s | every run, seq/s | non-pad tokens/s | padding | "
              "peak RSS MB | trainable |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append("| %s | %.2f | %s | %.0f | %.0f%% | %.0f | %s |" % (
            name, r["sequences_per_s"], ", ".join("%.2f" % v for v in r["runs_sequences_per_s"]),
            r["tokens_per_s"], 100 * r["padding_share"], r["peak_memory_mb"],
            "{:,}".format(r["trainable_parameters"])))
    lines += ["", trainable_note(rows)]
    lines += ["", "EH-FT end to end (`ehft train`, %d updates in all, validation and checkpoints "
              "included), medians over the rounds: FT %.0f s, EH-FT(BitFit) %.0f s." % (
                  run["wall_updates"], results["ft_vs_ehft_wall"]["ft_seconds"],
                  results["ft_vs_ehft_wall"]["ehft_seconds"]), "",
              ] + wall_table(results["ft_vs_ehft_wall"].get("where")) + [
              "Every command and raw figure: `benchmarks/results/speed.json`; ratios with their "
              "raw figures: `benchmarks/results.json`. Optimizer step times: "
              "`benchmarks/results/optimizer_step.md`.", ""]
    write_file(path, "\n".join(lines))


def main():
    """Rewrite results.json and RESULTS.md from the saved rounds (results/speed.json), after a
    change to the way they are reported; nothing is measured again."""
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(out, "results", "speed.json")) as f:
        saved = json.load(f)
    write_results(out, saved["run"], saved["rounds"])


if __name__ == "__main__":
    main()
