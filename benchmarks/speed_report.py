"""benchmarks/RESULTS.md from what benchmarks/speed.py measured (nothing typed in)."""

from ehft_plugin.atomic import write_file

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
}


def write_markdown(path, run, rows, results):
    lines = ["# Benchmarks", "",
             "Made by `%s` on %s (%d threads), torch %s, Python %s. Backbone `%s`, RTE train "
             "pairs truncated to %d tokens, batch %d, %d timed steps after %d warm-up steps, "
             "each configuration in its own process, measured %d times in turn (the median "
             "run is shown: this machine's speed drifts by 10-20%% over minutes). Same batches across the random-order "
             "configurations (checked by a digest of the timed example ids): %s."
             % (run["command"], run["machine"], run["threads"], run["torch"], run["python"],
                run["backbone"], run["max_length"], run["batch_size"], run["steps"],
                run["warmup"], run["repeats"], "yes" if run["same_batches"] else "NO"), "",
             "## Targets", "", "| key | what | measured | target | met |", "|---|---|---|---|---|"]
    for key, text in EXPLAIN.items():
        entry = results[key]
        target = entry.get("target")
        lines.append("| `%s` | %s | %.3f | %s | %s |" % (
            key, text, entry["value"], "≥ %.3f" % target if target else "—",
            "—" if target is None else "yes" if entry["met"] else "**missed**"))
    lines += ["", "Lower peak memory than full finetuning (frozen weights carry no gradient or "
              "optimizer state): " + ", ".join(
                  "%s %s (%.0f vs %.0f MB)" % (m, "yes" if results["%s_vs_ft" % m]["lower_memory"]
                                               else "**no**",
                                               results["%s_vs_ft" % m]["peak_memory_mb"],
                                               results["%s_vs_ft" % m]["ft_peak_memory_mb"])
                  for m in ("bitfit", "lora", "prefix")) + ".", "",
              "## Measurements", "",
              "| configuration | seq/s | every run, seq/s | non-pad tokens/s | padding | "
              "peak RSS MB | trainable |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append("| %s | %.2f | %s | %.0f | %.0f%% | %.0f | %s |" % (
            name, r["sequences_per_s"], ", ".join("%.2f" % v for v in r["runs_sequences_per_s"]),
            r["tokens_per_s"], 100 * r["padding_share"], r["peak_memory_mb"],
            "{:,}".format(r["trainable_parameters"])))
    lines += ["", "EH-FT end to end (`ehft train`, %d updates in all, validation and checkpoints "
              "included): FT %.0f s, EH-FT(BitFit) %.0f s." % (
                  run["wall_updates"], results["ft_vs_ehft_wall"]["ft_seconds"],
                  results["ft_vs_ehft_wall"]["ehft_seconds"]), "",
              "Every command and raw figure: `benchmarks/results/speed.json`; ratios with their "
              "raw figures: `benchmarks/results.json`. Optimizer step times: "
              "`benchmarks/results/optimizer_step.md`.", ""]
    write_file(path, "\n".join(lines))
