"""The GPU side by side: stock fairseq `sentence_prediction`, the plugin's FT, BitFit, LoRA and
prefix stages, and HF transformers (+ HF PEFT) on one GPU, on identical batches (checked by
digest), in fp16 and bf16.

    python -m benchmarks.speed_cuda [--shapes large minilm] [--steps 40] [--warmup 20]
    python -m benchmarks.speed_cuda --device cpu --shapes tiny --steps 2 --warmup 1  # (tests)

Shapes: `large`, RoBERTa-large with random weights on RTE tokenised with the GPT-2 BPE (speed
does not depend on the weights); `minilm`, the converted all-MiniLM-L6-v2 on RTE tokenised
with its WordPiece; `minilm-random`, its shape with random weights on the GPT-2 BPE data (for
a GPU machine that the weights cannot be carried to); `tiny` (CPU tests). Batch settings: `rte`, batch 32 at RTE's real lengths
(padded to the longest of the batch); `tokenrich`, batch 32 of 256-token inputs (consecutive
RTE premises joined and truncated to 256 tokens), where the arithmetic should dominate.

Configurations run one after another in this process (imports and CUDA start-up are paid
once); CUDA's peak-memory counter is reset before each, so each peak is its own. Each row
records its warm-up cost and its step-time distribution. Writes benchmarks/results-cuda.json
(one key per target, each {value, target, met, ...}), benchmarks/RESULTS-cuda.md and
benchmarks/results/speed-cuda.json (every measurement). With no GPU it says so and writes
nothing.

Longer than ~300 lines because every peer is measured in this one process on the same
batches (the point of the side by side), so their set-up lives beside the timing loop.
"""

import argparse
import csv
import gc
import json
import os
import platform
import subprocess
import sys
import traceback

import torch

from ehft_plugin.atomic import write_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LORA_PLAN = "all:lora(r=8,alpha=16,dropout=0,targets=q+k+v+out)"  # = hf_step.LORA
PREFIX_PLAN = "all:prefix(len=16)"  # = hf_step.PREFIX_TOKENS
TOKENRICH_LENGTH = 256
TARGETS = {"ft_vs_fairseq": 1.0, "ft_vs_hf": 1.0, "bitfit_vs_ft": 1.4, "lora_vs_ft": 1.3,
           "prefix_vs_ft": 1.3, "mfu_ft_tokenrich": 0.30, "default_pipeline_vs_hf": 2.0}
SHAPES = {  # encoder layers, dim, ffn dim, heads; None: the converted backbone's
    "large": (24, 1024, 4096, 16),
    "minilm": None,
    "minilm-random": (6, 384, 1536, 12),  # its shape, where its weights cannot be carried
    "tiny": (2, 32, 64, 4),
}


def shared_data():
    return os.environ.get("EHFT_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))


def tokenrich_raw(out):
    """RTE's train and dev files with each premise followed by the next ones until it is long
    (about 2000 characters): every input reaches TOKENRICH_LENGTH tokens once truncated."""
    source = os.path.join(shared_data(), "glue", "RTE")
    os.makedirs(out, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        with open(os.path.join(source, name), encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        header, body = rows[0], rows[1:]
        premises = [r[1] for r in body]
        with open(os.path.join(out, name), "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\",
                                lineterminator="\n")
            writer.writerow(header)
            for i, row in enumerate(body):
                text, j = row[1], i
                while len(text) < 2000:
                    j = (j + 1) % len(premises)
                    text += " " + premises[j]
                writer.writerow([row[0], text, row[2], row[3]])
    return out


def prepare(shape, setting, backbone):
    """A glue_ehft data directory for this shape's tokeniser and batch setting (cached)."""
    name = "%s-%s" % ("wordpiece" if shape == "minilm" else "gpt2", setting)
    out = os.path.join(ROOT, ".cache", "bench-data", "cuda-" + name)
    if os.path.isfile(os.path.join(out, "ehft_task.json")):
        return out
    raw = os.path.join(shared_data(), "glue", "RTE")
    if setting == "tokenrich":
        raw = tokenrich_raw(os.path.join(ROOT, ".cache", "bench-data", "rte-tokenrich-raw"))
    cmd = [os.path.join(os.path.dirname(sys.executable), "ehft"), "prepare", "rte",
           "--raw-dir", raw, "--out-dir", out, "--force"]
    if setting == "tokenrich":
        cmd += ["--max-length", str(TOKENRICH_LENGTH)]
    if shape == "minilm":
        cmd += ["--backbone", backbone]
    else:
        bpe = os.path.join(shared_data(), "bpe")
        cmd += ["--bpe", "gpt2", "--gpt2-encoder-json", os.path.join(bpe, "encoder.json"),
                "--gpt2-vocab-bpe", os.path.join(bpe, "vocab.bpe"),
                "--srcdict", os.path.join(bpe, "dict.txt")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def shape_flags(args, shape):
    """(fairseq flags of the model's dimensions, of its weights, number of layers, HF model)."""
    if SHAPES[shape] is not None:
        layers, dim, ffn, heads = SHAPES[shape]
        dims = ["--encoder-layers", layers, "--encoder-embed-dim", dim,
                "--encoder-ffn-embed-dim", ffn, "--encoder-attention-heads", heads,
                "--max-positions", 512]
        return [str(a) for a in dims], [], layers, "random:" + shape
    from benchmarks.speed import model_flags  # the converted backbone's dimension flags, as on CPU

    dims, record = model_flags(args.backbone)
    model = record["model"]
    weights = ["--finetune-from-model", os.path.join(args.backbone, "model.pt"),
               "--layer-norm-eps", str(model.get("layer_norm_eps", 1e-5))]
    return dims, weights, model["encoder_layers"], record["source"]


def fairseq_argv(args, shape, data, precision, stock=False, peft="full", order="random",
                 extra=()):
    """fairseq-train flags of one configuration (the same batches: seed, batch size, order)."""
    dims, weights, layers, _ = shape_flags(args, shape)
    common = [data, *dims, "--batch-size", "32", "--lr", "1e-5", "--num-workers", "0",
              "--seed", "1", "--no-save", "--save-dir", os.path.join(ROOT, ".cache", "bench-save"),
              {"fp16": "--fp16", "bf16": "--bf16"}[precision],
              *(["--cpu"] if args.device == "cpu" else [])]
    if stock:  # fairseq's own task, criterion, model and optimizer, as its RoBERTa GLUE recipe
        return common + weights[:2] + [
            "--task", "sentence_prediction", "--criterion", "sentence_prediction",
            "--num-classes", "2", "--init-token", "0", "--separator-token", "2",
            "--arch", "roberta_base", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
            "--adam-eps", "1e-6"]
    return common + weights + [
        "--user-dir", os.path.join(ROOT, "ehft_plugin"), "--task", "glue_ehft",
        "--criterion", "sentence_prediction_ehft", "--arch", "roberta_ehft_base",
        "--optimizer", "ehft_adamw", "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-6",
        "--batch-order", order, "--peft", peft.replace("all:", "0-%d:" % (layers - 1)), *extra]


def configurations(args, shape, setting, precision):
    """(name, kind, arguments) of every configuration of one (shape, setting, precision)."""
    full = shape != "minilm" and setting == "rte" and precision == "fp16" or args.all
    plugin = [("plugin ft", dict())]
    if full or shape == "minilm":
        plugin += [("plugin bitfit", dict(peft="bitfit")), ("plugin lora", dict(peft=LORA_PLAN)),
                   ("plugin prefix", dict(peft=PREFIX_PLAN))]
    if full:
        plugin += [("plugin ft, --attention-kernel fairseq",
                    dict(extra=["--attention-kernel", "fairseq"])),
                   ("plugin ft, --pad-to-multiple 8", dict(extra=["--pad-to-multiple", "8"]))]
    if setting == "rte":  # the plugin's defaults: length-grouped batches; HF: Trainer's
        plugin += [("plugin ft, default pipeline", dict(order="length"))]
    out = [("stock fairseq ft", "fairseq", dict(stock=True))]
    out += [(name, "fairseq", kwargs) for name, kwargs in plugin]
    methods = ["ft", "bitfit", "lora", "prefix"] if full or shape == "minilm" else ["ft"]
    out += [("hf %s" % m, "hf", dict(method=m)) for m in methods]
    return out


def run_configuration(args, shape, setting, precision, data, name, kind, kwargs, replay=False,
                      profile=0):
    from benchmarks import bench

    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        if kind == "fairseq":
            from fairseq.logging import metrics

            # a metric another configuration derived (the plugin's accuracy) must not meet
            # this one's logged value of the same name
            metrics.reset()
            argv = fairseq_argv(args, shape, data, precision, **kwargs)
            row = bench.measure(argv, steps=args.steps, warmup=args.warmup, profile=profile,
                                replay=replay)
            row["command"] = "fairseq-train " + " ".join(
                os.path.relpath(a, ROOT) if os.path.isabs(a) else a for a in argv)
        else:
            from benchmarks import hf_step

            model = shape_flags(args, shape)[3]
            row = hf_step.measure(data, model, kwargs["method"], 32, "random", args.steps,
                                  args.warmup, args.device, precision, replay=replay)
            row["command"] = "hf_step.py %s %s" % (model if ":" in model else "(backbone)",
                                                   kwargs["method"])
    except Exception as error:  # an out-of-memory or a library's refusal: say so, go on
        traceback.print_exc()
        row = {"error": "%s: %s" % (type(error).__name__, str(error).splitlines()[0][:300])}
    finally:
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
    row.update(shape=shape, setting=setting, precision_flag=precision, name=name)
    return row


def ratio(num, den, key="sequences_per_s"):
    if num is None or den is None or "error" in num or "error" in den:
        return {"value": None, "why": "a configuration failed or did not run"}
    return {"value": num[key] / den[key], "of": key, "numerator": num[key],
            "denominator": den[key]}


def ratios(rows, shape):
    from benchmarks.speed_report import meets

    def row(name, setting="rte", precision="fp16"):
        return rows.get((shape, setting, precision, name))

    ft = row("plugin ft")
    out = {
        # stock fairseq adds one more separator per pair: compare tokens, not sequences
        "ft_vs_fairseq": ratio(ft, row("stock fairseq ft"), "tokens_per_s"),
        "ft_vs_hf": ratio(ft, row("hf ft")),
        "bitfit_vs_ft": ratio(row("plugin bitfit"), ft),
        "lora_vs_ft": ratio(row("plugin lora"), ft),
        "prefix_vs_ft": ratio(row("plugin prefix"), ft),
        "default_pipeline_vs_hf": ratio(row("plugin ft, default pipeline"), row("hf ft"),
                                        "tokens_per_s"),
    }
    rich = row("plugin ft", "tokenrich", "bf16")
    out["mfu_ft_tokenrich"] = {"value": rich["mfu"] if rich and "mfu" in rich else None,
                               **({k: rich[k] for k in ("model_flops_per_s",
                                                        "matmul_peak_flops_per_s")}
                                  if rich and "mfu" in rich else {})}
    for key, entry in out.items():
        entry["target"] = TARGETS[key]
        # None: not measured in this run (a failed or skipped configuration), not a miss
        entry["met"] = None if entry["value"] is None else meets(entry["value"], TARGETS[key])
        entry["shape"] = shape
    return out


def environment(args):
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "device": args.device, "steps": args.steps, "warmup": args.warmup}
    if args.device == "cuda":
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version())
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            env["driver"] = "unknown (nvidia-smi not available)"
    for package in ("fairseq", "transformers", "peft"):
        try:
            env[package] = __import__(package).__version__
        except Exception:
            env[package] = None
    return env


# (setting, precision, name, kind, arguments): what the GPU targets need, most needed first
HEADLINE = [
    ("rte", "fp16", "plugin ft", "fairseq", dict()),
    ("rte", "fp16", "stock fairseq ft", "fairseq", dict(stock=True)),
    ("rte", "fp16", "hf ft", "hf", dict(method="ft")),
    ("rte", "fp16", "plugin bitfit", "fairseq", dict(peft="bitfit")),
    ("rte", "fp16", "plugin lora", "fairseq", dict(peft=LORA_PLAN)),
    ("rte", "fp16", "plugin prefix", "fairseq", dict(peft=PREFIX_PLAN)),
    ("rte", "fp16", "plugin ft, default pipeline", "fairseq", dict(order="length")),
    ("tokenrich", "bf16", "plugin ft", "fairseq", dict()),
]


def headline(args, run):
    """The headline ratios only (HEADLINE), each row appended to OUT/rows.jsonl and the
    results rewritten as soon as it finishes, so that a run stopped by the device's time
    limit still returns what it measured. Each configuration warms up on its timed batches
    (every shape seen before timing); plugin FT at RTE lengths adds one profiled step
    (OUT/profile-ft.json). A configuration that would start after --budget-s is skipped and
    says so. On a CPU (rehearsal) fp16 rows run in bf16: fairseq's fp16 needs CUDA."""
    import time

    start = time.time()
    shape = args.shapes[0]
    os.makedirs(args.out, exist_ok=True)
    rows_path = os.path.join(args.out, "rows.jsonl")
    if os.path.exists(rows_path):
        os.remove(rows_path)
    run.update(mode="headline", replayed_warmup=True,
               precision_substituted=args.device != "cuda")
    rows = {}
    for setting, precision, name, kind, kwargs in HEADLINE:
        if time.time() - start > args.budget_s:
            row = {"error": "skipped: the %d s budget was spent" % args.budget_s,
                   "shape": shape, "setting": setting, "precision_flag": precision,
                   "name": name}
        else:
            flag = precision if args.device == "cuda" else "bf16"
            profile = 1 if (setting, name) == ("rte", "plugin ft") else 0
            row = run_configuration(args, shape, setting, flag, prepare(shape, setting,
                                                                        args.backbone),
                                    name, kind, dict(kwargs), replay=True, profile=profile)
            if "profile" in row:
                write_file(os.path.join(args.out, "profile-ft.json"),
                           json.dumps(row.pop("profile"), indent=1) + "\n")
        row["seconds_since_start"] = round(time.time() - start, 1)
        rows[(shape, setting, precision, name)] = row
        with open(rows_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print("  %-6s %-9s %s %-30s %s" % (shape, setting, row.get("precision_flag"), name,
                                            row.get("error") or _summary(row)), flush=True)
        write_results(args, run, rows, [shape])
    return 0


def write_results(args, run, rows, shapes):
    digests = {}
    for (shape, setting, precision, name), row in rows.items():
        if "error" not in row and ("random" in name or "default" not in name):
            digests.setdefault((shape, setting), set()).add(row.get("batches_digest"))
    run["same_batches"] = all(len(d) == 1 for d in digests.values())
    results = dict(run=run, **ratios(rows, shapes[0]))
    others = {shape: ratios(rows, shape) for shape in shapes[1:]}
    if others:
        results["other_shapes"] = others
    listed = [dict(row) for row in rows.values()]
    write_file(os.path.join(args.out, "results-cuda.json"), json.dumps(results, indent=1) + "\n")
    write_file(os.path.join(args.out, "RESULTS-cuda.md"), markdown(run, listed, results))
    return listed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=["large", "minilm"])
    parser.add_argument("--settings", nargs="+", choices=["rte", "tokenrich"],
                        default=["rte", "tokenrich"])
    parser.add_argument("--precisions", nargs="+", choices=["fp16", "bf16"],
                        default=["fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=20,
                        help="untimed steps first (their time is reported as the warm-up cost)")
    parser.add_argument("--all", action="store_true",
                        help="every method in every setting (default: the methods only where "
                             "a target needs them, and FT elsewhere)")
    parser.add_argument("--backbone", default=os.path.join(ROOT, ".cache", "backbones",
                                                           "all-MiniLM-L6-v2"))
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--headline", action="store_true",
                        help="only the headline configurations, each written as it finishes "
                             "(scripts/device_checks.sh headline); --steps default 20")
    parser.add_argument("--budget-s", type=int, default=210,
                        help="--headline: start no configuration after this many seconds")
    args = parser.parse_args(argv)
    if args.headline and "--steps" not in (sys.argv if argv is None else argv):
        args.steps = 20
    if args.device == "cuda" and not torch.cuda.is_available():
        print("speed_cuda: skipped, no CUDA device here (nothing written)")
        return 0
    run = dict(environment(args), command=" ".join(["python", "-m", "benchmarks.speed_cuda"] +
                                                   (sys.argv[1:] if argv is None else argv)))
    print("speed_cuda: %s" % json.dumps(run), flush=True)
    if args.headline:
        if args.shapes == ["large", "minilm"]:  # the default: the headline is RoBERTa-large's
            args.shapes = ["large"]
        return headline(args, run)
    rows = {}
    for shape in args.shapes:
        for setting in args.settings:
            data = prepare(shape, setting, args.backbone)
            for precision in args.precisions:
                for name, kind, kwargs in configurations(args, shape, setting, precision):
                    row = run_configuration(args, shape, setting, precision, data, name, kind,
                                            kwargs)
                    rows[(shape, setting, precision, name)] = row
                    print("  %-6s %-9s %s %-38s %s" % (shape, setting, precision, name,
                                                        row.get("error") or _summary(row)),
                          flush=True)
    listed = write_results(args, run, rows, args.shapes)
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    write_file(os.path.join(args.out, "results", "speed-cuda.json"),
               json.dumps(dict(run=run, measurements=listed), indent=1) + "\n")
    print("speed_cuda: wrote results-cuda.json, RESULTS-cuda.md, results/speed-cuda.json in %s"
          % args.out)
    return 0


def _summary(row):
    return "%.1f seq/s, %.0f tokens/s, median %.1f ms, p90 %.1f, max %.1f, warm-up %.1f s, " \
           "peak %.0f MB%s" % (row["sequences_per_s"], row["tokens_per_s"],
                               row["median_step_ms"], row["p90_step_ms"], row["max_step_ms"],
                               row["warmup_seconds"], row["peak_memory_mb"],
                               ", MFU %.3f" % row["mfu"] if "mfu" in row else "")


def markdown(run, rows, results):
    from benchmarks.speed_report import verdict

    lines = ["# GPU speed, side by side", "",
             "Command: `%s`  " % run["command"],
             "%s; driver %s, CUDA %s, torch %s, Python %s, fairseq %s, transformers %s, peft %s."
             % (run.get("gpu", run["device"]), run.get("driver", "-"), run.get("cuda", "-"),
                run["torch"], run["python"], run["fairseq"], run["transformers"], run["peft"]),
             "Batch 32; %d timed steps after %d warm-up steps; same batches in every "
             "random-order configuration of a setting: %s. MFU: trained matmul weights 6 FLOPs "
             "per parameter per non-padding token, frozen ones 4, attention 12·L·d·s, over the "
             "matmul peak measured in the same process." % (
                 run["steps"], run["warmup"], "yes" if run["same_batches"] else "**no**"), "",
             "| key | value | target | met |", "|---|---|---|---|"]
    for key in TARGETS:
        entry = results[key]
        if entry["value"] is None:
            lines.append("| %s | — | %s | not measured |" % (key, entry["target"]))
            continue
        lines.append("| %s | %.3f | %s | %s |" % (key, entry["value"], entry["target"],
                                                  verdict(entry)))
    lines += ["", "| shape | batches | precision | configuration | seq/s | non-pad tokens/s | "
              "MFU | median ms | p90 ms | max ms | warm-up s | peak MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append("| %s | %s | %s | %s | failed: %s | | | | | | | |" % (
                r["shape"], r["setting"], r["precision_flag"], r["name"], r["error"]))
            continue
        lines.append("| %s | %s | %s | %s | %.1f | %.0f | %s | %.1f | %.1f | %.1f | %.1f | "
                     "%.0f |" % (r["shape"], r["setting"], r["precision_flag"], r["name"],
                                 r["sequences_per_s"], r["tokens_per_s"],
                                 "%.3f" % r["mfu"] if "mfu" in r else "—", r["median_step_ms"],
                                 r["p90_step_ms"], r["max_step_ms"], r["warmup_seconds"],
                                 r["peak_memory_mb"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
