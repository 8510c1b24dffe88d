"""Speed and memory, side by side in one run: the plugin's training step against stock
fairseq and against HF transformers + HF PEFT, on the same backbone and the same real batches.

    .venv/bin/python benchmarks/speed.py [--backbone DIR] [--steps 15] [--repeats 3]
                                         [--batch-size 32]

Default: the converted all-MiniLM-L6-v2, the GLUE RTE train pairs from
../shared/data truncated to 128 tokens (ehft prepare --max-length 128), batch 32, on CPU with
the machine's threads. Every configuration runs in a process of its own (peak memory is its
own) and reports which examples it timed, so that "the same batches" is checked, not assumed.
Writes benchmarks/results.json (ratio keys, each with its raw figures), benchmarks/RESULTS.md
and benchmarks/results/speed.json (every measurement).
"""

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from ehft_plugin.atomic import write_file  # noqa: E402

# on every layer ("all" is replaced by 0-(L-1)): what HF PEFT's configs in hf_step.py do
LORA_PLAN = "all:lora(r=8,alpha=16,dropout=0,targets=q+k+v+out)"
PREFIX_PLAN = "all:prefix(len=16)"  # = PrefixTuningConfig(num_virtual_tokens=16)
# (name, what, --peft or HF method, batch order); "random" is fairseq's and HF's default
PLUGIN = [("plugin ft, random batches", "full", "random"),
          ("plugin bitfit, random batches", "bitfit", "random"),
          ("plugin lora, random batches", LORA_PLAN, "random"),
          ("plugin prefix, random batches", PREFIX_PLAN, "random"),
          ("plugin ft, default pipeline", "full", "length"),
          # the EH-FT paper's other baselines (no targets): Mixout mixes every layer's weights
          # with the pretrained ones, Child-Tuning_D masks the gradients outside its child
          ("plugin mixout, random batches", "mixout(p=0.9)", "random"),
          ("plugin child-tuning-d, random batches", "full", "random")]
CHILD = "plugin child-tuning-d, random batches"
CHILD_SHARE = 0.3
HF = ["ft", "bitfit", "lora", "prefix"]
TARGETS = {"stage2_vs_fairseq": 0.98, "bitfit_vs_ft": 1.3, "lora_vs_ft": 1.15,
           "prefix_vs_ft": 1.2, "ft_vs_hf": 1.0, "bitfit_vs_hf": 1.0, "lora_vs_hf": 1.0,
           "default_pipeline_vs_hf": 1.5, "mfu": 0.5, "ft_vs_ehft_wall": 1 / 1.05}


def busy_cpu_seconds(stat_text):
    """CPU seconds the whole machine has spent busy, from /proc/stat's first ("cpu") line."""
    fields = stat_text.splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError("not a /proc/stat text: first field %r" % fields[0])
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Share of the machine's CPU that processes other than this benchmark used while it ran.

    Other work on a 2-core machine slows every configuration by a different amount, so the
    run records how quiet the machine was instead of leaving it to be guessed. None where
    /proc/stat is missing.
    """

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                busy = busy_cpu_seconds(f.read())
        except OSError:
            return None
        own = sum(getattr(resource.getrusage(who), field) for who in
                  (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                  for field in ("ru_utime", "ru_stime"))
        return busy, own, time.monotonic()

    def share(self):
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (b - a for a, b in zip(self.start, end))
        return max(0.0, (busy - own) / (wall * os.cpu_count()))


def sh(cmd, **kwargs):
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=ROOT,
                            **kwargs)
    if result.returncode != 0:
        raise SystemExit("speed: %s failed:\n%s" % (" ".join(map(str, cmd[:4])),
                                                    result.stderr[-3000:]))
    return result.stdout


def prepare(args):
    out = os.path.join(ROOT, ".cache", "bench-data", "rte-%s-%d" % (
        os.path.basename(os.path.normpath(args.backbone)), args.max_length))
    if not os.path.isfile(os.path.join(out, "ehft_task.json")):
        sh([os.path.join(os.path.dirname(sys.executable), "ehft"), "prepare", "rte",
            "--raw-dir", os.path.join(args.shared, "glue", "RTE"), "--out-dir", out,
            "--backbone", args.backbone, "--max-length", args.max_length, "--force"])
    return out


def model_flags(backbone):
    record = json.load(open(os.path.join(backbone, "ehft_backbone.json")))
    flags = []
    for key in ("encoder_layers", "encoder_embed_dim", "encoder_ffn_embed_dim",
                "encoder_attention_heads", "max_positions"):
        flags += ["--" + key.replace("_", "-"), str(record["model"][key])]
    return flags, record


def fairseq_argv(args, data, stock, peft=None, order=None):
    flags, record = model_flags(args.backbone)
    common = [data, *flags, "--finetune-from-model", os.path.join(args.backbone, "model.pt"),
              "--batch-size", str(args.batch_size), "--lr", "1e-5", "--cpu",
              "--num-workers", "0", "--seed", "1", "--no-save",
              "--save-dir", os.path.join(ROOT, ".cache", "bench-save")]
    if stock:  # fairseq's own task, criterion, model and optimizer, as its RoBERTa GLUE recipe
        return common + ["--task", "sentence_prediction", "--criterion", "sentence_prediction",
                         "--num-classes", "2", "--init-token", "0", "--separator-token", "2",
                         "--arch", "roberta_base", "--optimizer", "adam",
                         "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6"]
    return common + ["--user-dir", os.path.join(ROOT, "ehft_plugin"), "--task", "glue_ehft",
                     "--criterion", "sentence_prediction_ehft", "--arch", "roberta_ehft_base",
                     "--layer-norm-eps", str(record["model"].get("layer_norm_eps", 1e-5)),
                     "--optimizer", "ehft_adamw", "--adam-betas", "(0.9,0.98)",
                     "--adam-eps", "1e-6", "--batch-order", order, "--peft",
                     peft.replace("all:", "0-%d:" % (record["model"]["encoder_layers"] - 1))]


def child_mask(args, data, run):
    """Child-Tuning_D's mask for the benchmark's model (`ehft child-mask`, as `ehft train`
    computes it before the stage); what it cost goes in `run`."""
    out = os.path.join(ROOT, ".cache", "bench-save", "child-mask.safetensors")
    start = time.perf_counter()
    written = json.loads(sh([os.path.join(os.path.dirname(sys.executable), "ehft"), "child-mask",
                             "--share", CHILD_SHARE, "--out", out,
                             *(["--max-examples", args.child_examples] if args.child_examples
                               else []),
                             "--", *fairseq_argv(args, data, False, "full", "random")]
                            ).strip().splitlines()[-1])
    run["child_mask"] = {"seconds": round(time.perf_counter() - start, 1),
                         "examples": written["examples"], "share": CHILD_SHARE}
    return out


def measure_all(args, data, mask=None):
    rows = {}
    steps = [str(args.steps), str(args.warmup)]
    configs = [("stock fairseq ft (sentence_prediction)",
                [sys.executable, "-m", "ehft_plugin.bench", *steps,
                 *fairseq_argv(args, data, stock=True)])]
    configs += [(name, [sys.executable, "-m", "ehft_plugin.bench", *steps,
                        *fairseq_argv(args, data, False, peft, order),
                        *(["--child-tuning-mask", mask] if name == CHILD else [])])
                for name, peft, order in PLUGIN if name != CHILD or mask]
    configs += [("hf %s, random batches" % m,
                 [sys.executable, os.path.join(HERE, "hf_step.py"), *steps, data, args.hf_model,
                  m, str(args.batch_size), "random"]) for m in HF]
    # round robin: this machine's speed drifts by 10-20% over minutes, so each configuration
    # is measured --repeats times spread over the run, and its median run is kept
    runs = {name: [] for name, _ in configs}
    for repeat in range(args.repeats):
        for name, cmd in configs:
            row = json.loads(sh(cmd).strip().splitlines()[-1])
            runs[name].append(row)
            print("  %d/%d %-42s %6.2f seq/s %7.0f non-pad tokens/s  peak %5.0f MB  padding "
                  "%.0f%%" % (repeat + 1, args.repeats, name, row["sequences_per_s"],
                              row["tokens_per_s"], row["peak_memory_mb"],
                              100 * row["padding_share"]), flush=True)
    for name, cmd in configs:
        ordered = sorted(runs[name], key=lambda r: r["sequences_per_s"])
        rows[name] = dict(ordered[(len(ordered) - 1) // 2],
                          runs_sequences_per_s=[r["sequences_per_s"] for r in runs[name]],
                          command=" ".join(os.path.relpath(c, ROOT) if os.path.isabs(c)
                                           else c for c in map(str, cmd)))
    return rows


def ehft_wall(args, data, method):
    """(wall seconds of `ehft train` for `method`, where they went: stage_seconds)."""
    save_dir = os.path.join(ROOT, ".cache", "bench-runs", str(os.getpid()))
    start = time.perf_counter()
    sh([os.path.join(os.path.dirname(sys.executable), "ehft"), "train", "--method", method,
        "--data", data, "--checkpoint", os.path.join(args.backbone, "model.pt"),
        "--save-dir", save_dir,
        "--total-updates", args.wall_updates, "--batch-size", args.batch_size, "--overwrite",
        "--", "--cpu", "--num-workers", "0"])
    seconds = time.perf_counter() - start
    return seconds, stage_seconds(glob.glob(os.path.join(save_dir, "*", method, "seed1"))[0],
                                  seconds)


def stage_seconds(run_dir, total):
    """Each stage's timings from its done.json (start checkpoint, fairseq-train process, its
    training loop, hand-over), and `launcher`: the rest of `total`, i.e. the ehft process's
    own start-up, checks and reading of the original checkpoint."""
    stages = {}
    for done in sorted(glob.glob(os.path.join(run_dir, "*", "done.json"))):
        with open(done) as f:
            stages[os.path.basename(os.path.dirname(done))] = json.load(f).get("seconds", {})
    spent = sum(v for s in stages.values() for k, v in s.items() if k != "training" and v)
    return {"stages": stages, "launcher": total - spent}


def ratio(numerator, denominator, key="sequences_per_s"):
    """numerator / denominator of `key` (medians), and the same ratio within each repeat.

    Repeat i of every configuration ran in the same round, minutes apart at most, so the
    per-repeat ratios show how far this machine's drift moves the figure.
    """
    def per_run(row):  # the same batches every repeat: `key` scales with sequences/s
        scale = row[key] / row["sequences_per_s"]
        return [scale * v for v in row.get("runs_sequences_per_s", [row["sequences_per_s"]])]

    return {"value": numerator[key] / denominator[key], "of": key,
            "numerator": numerator[key], "denominator": denominator[key],
            "per_repeat": [n / d for n, d in zip(per_run(numerator), per_run(denominator))]}


def ratios(rows, walls, wall_stages=None):
    from speed_report import meets  # benchmarks/ is on the path wherever ratios() runs

    r = rows
    hf, ft = r["hf ft, random batches"], r["plugin ft, random batches"]
    out = {
        # stock fairseq adds one more separator per pair: compare tokens, not sequences
        "stage2_vs_fairseq": ratio(ft, r["stock fairseq ft (sentence_prediction)"],
                                   "tokens_per_s"),
        "bitfit_vs_ft": ratio(r["plugin bitfit, random batches"], ft),
        "lora_vs_ft": ratio(r["plugin lora, random batches"], ft),
        "prefix_vs_ft": ratio(r["plugin prefix, random batches"], ft),
        "ft_vs_hf": ratio(ft, hf),
        "bitfit_vs_hf": ratio(r["plugin bitfit, random batches"], r["hf bitfit, random batches"]),
        "lora_vs_hf": ratio(r["plugin lora, random batches"], r["hf lora, random batches"]),
        "prefix_vs_hf": ratio(r["plugin prefix, random batches"], r["hf prefix, random batches"]),
        "default_pipeline_vs_hf": ratio(r["plugin ft, default pipeline"], hf, "tokens_per_s"),
        "mfu": {"value": r["plugin ft, default pipeline"]["mfu"],
                "model_flops_per_s": r["plugin ft, default pipeline"]["model_flops_per_s"],
                "matmul_peak_flops_per_s":
                    r["plugin ft, default pipeline"]["matmul_peak_flops_per_s"]},
        "ft_vs_ehft_wall": {"value": walls["ft"] / walls["ehft-bitfit"],
                            "ft_seconds": walls["ft"], "ehft_seconds": walls["ehft-bitfit"],
                            **({"where": wall_stages} if wall_stages else {})},
    }
    for key, entry in out.items():
        if key in TARGETS:
            entry["target"] = TARGETS[key]
            entry["met"] = meets(entry["value"], TARGETS[key])
    for key, name in (("mixout_vs_ft", "plugin mixout, random batches"),
                      ("child_tuning_vs_ft", CHILD)):
        if name in r:  # measured since these methods joined the zoo
            out[key] = dict(ratio(r[name], ft), peak_memory_mb=r[name]["peak_memory_mb"],
                            ft_peak_memory_mb=ft["peak_memory_mb"])
    for name in ("bitfit", "lora", "prefix"):  # frozen weights carry no optimizer state
        out["%s_vs_ft" % name]["peak_memory_mb"] = r["plugin %s, random batches" % name][
            "peak_memory_mb"]
        out["%s_vs_ft" % name]["ft_peak_memory_mb"] = ft["peak_memory_mb"]
        out["%s_vs_ft" % name]["lower_memory"] = (out["%s_vs_ft" % name]["peak_memory_mb"]
                                                  < ft["peak_memory_mb"])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=os.path.join(ROOT, ".cache", "backbones",
                                                           "all-MiniLM-L6-v2"))
    parser.add_argument("--hf-model", help="the backbone's HF directory (default: the source "
                                           "recorded by ehft convert)")
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements of each configuration, taken in turn (median kept)")
    parser.add_argument("--wall-updates", type=int, default=100,
                        help="total updates of the end-to-end FT vs EH-FT wall-time runs")
    parser.add_argument("--child-examples", type=int,
                        help="training examples for Child-Tuning_D's Fisher pass (default: "
                             "all, as the method does)")
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args()
    args.hf_model = args.hf_model or json.load(open(os.path.join(
        args.backbone, "ehft_backbone.json")))["source"]
    import torch

    run = {"command": " ".join(["python", "benchmarks/speed.py"] + sys.argv[1:]),
           "machine": "%s, %d cores" % (platform.machine(), os.cpu_count()),
           "threads": torch.get_num_threads(), "python": platform.python_version(),
           "torch": torch.__version__, "backbone": os.path.relpath(args.backbone, ROOT),
           "batch_size": args.batch_size, "max_length": args.max_length,
           "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
           "wall_updates": args.wall_updates}
    print("speed: %s" % json.dumps(run), flush=True)
    data = prepare(args)
    load = OtherLoad()
    rows = measure_all(args, data, child_mask(args, data, run))
    same = {rows[n]["batches_digest"] for n in rows if "random" in n or "stock" in n}
    run["same_batches"] = len(same) == 1
    timed = {m: ehft_wall(args, data, m) for m in ("ft", "ehft-bitfit")}
    walls = {m: seconds for m, (seconds, _) in timed.items()}
    wall_stages = {m: stages for m, (_, stages) in timed.items()}
    print("  ehft train, %d updates: ft %.0f s, ehft-bitfit %.0f s" % (
        args.wall_updates, walls["ft"], walls["ehft-bitfit"]))
    run["other_cpu_share"] = load.share()
    if run["other_cpu_share"] is not None:
        print("  other processes used %.1f%% of the machine's CPU meanwhile"
              % (100 * run["other_cpu_share"]))
    results = dict(run=run, **ratios(rows, walls, wall_stages))
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    write_file(os.path.join(args.out, "results", "speed.json"),
               json.dumps(dict(run=run, measurements=rows, walls=walls, wall_stages=wall_stages),
                          indent=1) + "\n")
    write_file(os.path.join(args.out, "results.json"), json.dumps(results, indent=1) + "\n")
    from speed_report import write_markdown

    write_markdown(os.path.join(args.out, "RESULTS.md"), run, rows, results)
    print("speed: wrote %s" % ", ".join(os.path.join(args.out, f) for f in (
        "results.json", "RESULTS.md", "results/speed.json")))


if __name__ == "__main__":
    main()
