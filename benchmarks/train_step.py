"""Training-step throughput of the plugin's fairseq training: tokens/s and model FLOPs
utilisation per precision and --peft plan, RoBERTa-large shaped with random weights by default
(speed does not depend on the weights). On a GPU: fp16 and bf16. Each configuration runs in a
process of its own (python -m benchmarks.bench), so peak memory is its own.

    .venv/bin/python -m benchmarks.train_step --device cuda [--data DIR] [--batch-size 32]
    .venv/bin/python -m benchmarks.train_step --device cpu --shape base --precision fp32 bf16
    .venv/bin/python -m benchmarks.train_step --device cuda --profile 5  # + a step's time

Without --data, RTE from ../shared/data (or $EHFT_SHARED_DATA) is prepared with RoBERTa's
GPT-2 BPE. Writes
benchmarks/results/train_step-DEVICE.{json,md}. With --device cuda and no GPU it says so and
writes nothing.
"""

import argparse
import json
import os
import platform
import subprocess
import sys

import torch

from ehft_plugin.atomic import write_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SHAPES = {  # fairseq flags of each shape
    "large": ["--arch", "roberta_ehft_large"],
    "base": ["--arch", "roberta_ehft_base"],
    "tiny": ["--arch", "roberta_ehft_base", "--encoder-layers", "2", "--encoder-embed-dim", "16",
             "--encoder-ffn-embed-dim", "32", "--encoder-attention-heads", "4"],
}
PRECISION_FLAGS = {"fp32": [], "fp16": ["--fp16"], "bf16": ["--bf16"], "amp": ["--amp"]}


def prepare_rte(out):
    # EHFT_SHARED_DATA as in the tests: a machine without ../shared carries the files elsewhere
    shared = os.environ.get("EHFT_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
    if not os.path.isfile(os.path.join(out, "ehft_task.json")):
        bpe = os.path.join(shared, "bpe")
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "ehft"), "prepare", "rte",
                        "--raw-dir", os.path.join(shared, "glue", "RTE"), "--out-dir", out,
                        "--bpe", "gpt2", "--gpt2-encoder-json", os.path.join(bpe, "encoder.json"),
                        "--gpt2-vocab-bpe", os.path.join(bpe, "vocab.bpe"),
                        "--srcdict", os.path.join(bpe, "dict.txt"), "--force"],
                       check=True, stdout=subprocess.DEVNULL)
    return out


def fairseq_args(args, peft, precision):
    return [args.data, "--user-dir", os.path.join(ROOT, "ehft_plugin"), "--task", "glue_ehft",
            "--criterion", "sentence_prediction_ehft", *SHAPES[args.shape], "--peft", peft,
            "--max-positions", str(args.max_positions), "--optimizer", "ehft_adamw",
            "--lr", "1e-5", "--batch-size", str(args.batch_size), "--num-workers", "0",
            "--seed", "1", "--no-save", "--save-dir", os.path.join(ROOT, ".cache", "bench-save"),
            *(["--cpu"] if args.device == "cpu" else []), *PRECISION_FLAGS[precision]]


def run_one(args, peft, precision):
    cmd = [sys.executable, "-m", "benchmarks.bench", str(args.steps), str(args.warmup),
           *(["--profile", str(args.profile)] if args.profile else []),
           *fairseq_args(args, peft, precision)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--shape", choices=SHAPES, default="large")
    parser.add_argument("--precision", nargs="+", choices=PRECISION_FLAGS)
    parser.add_argument("--peft", nargs="+", default=["full", "bitfit", "lora", "prefix"])
    parser.add_argument("--data", help="a glue_ehft data directory (default: RTE, GPT-2 BPE)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-positions", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after the timed steps, N more under torch.profiler: how much of a "
                             "step the GPU (or CPU) was busy, fairseq's phases, the top operators")
    parser.add_argument("--out", help="default: benchmarks/results/train_step-DEVICE")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_step: skipped, no CUDA device here (nothing written)")
        return 0
    args.precision = args.precision or (["fp16", "bf16"] if args.device == "cuda" else ["fp32"])
    args.data = args.data or prepare_rte(os.path.join(ROOT, ".cache", "bench-data", "rte-gpt2"))
    out = args.out or os.path.join(HERE, "results", "train_step-%s" % args.device)
    record = {"command": " ".join(["python"] + sys.argv), "shape": args.shape,
              "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
              "profile_steps": args.profile,
              "python": platform.python_version(), "torch": torch.__version__, "results": []}
    print("train_step: %s" % json.dumps({k: v for k, v in record.items() if k != "results"}))
    for precision in args.precision:
        for peft in args.peft:
            row = dict(run_one(args, peft, precision), peft=peft, precision_flag=precision)
            record["results"].append(row)
            print("  %-5s %-7s %s" % (precision, peft, row.get("error") or
                                      "%.1f seq/s, %.0f tokens/s, MFU %.3f, peak %.0f MB" % (
                                          row["sequences_per_s"], row["tokens_per_s"],
                                          row["mfu"], row["peak_memory_mb"])))
    write(record, out)
    return 0 if all("error" not in r for r in record["results"]) else 1


def write(record, out):
    rows = record["results"]
    device = next((r["device"] for r in rows if "device" in r), "?")
    lines = ["# Training-step throughput, %s shape, %s" % (record["shape"], device), "",
             "Command: `%s`  " % record["command"],
             "torch %s, Python %s; batch %d sequences of RTE (padded to the longest in the "
             "batch); %d timed steps after %d warm-up steps; random weights; --optimizer "
             "ehft_adamw. MFU: PaLM's 6N + 12·L·d·s training FLOPs per non-padding token over "
             "the matmul peak measured in the same process, in the run's precision."
             % (record["torch"], record["python"], record["batch_size"], record["steps"],
                record["warmup"]), "",
             "| precision | --peft | seq/s | non-pad tokens/s | MFU | peak memory MB | "
             "trainable params |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append("| %s | %s | failed: %s | | | | |" % (r["precision_flag"], r["peft"],
                                                               r["error"]))
            continue
        lines.append("| %s | %s | %.1f | %.0f | %.3f | %.0f | %s |" % (
            r["precision_flag"], r["peft"], r["sequences_per_s"], r["tokens_per_s"], r["mfu"],
            r["peak_memory_mb"], "{:,}".format(r["trainable_parameters"])))
    lines += _step_spread(rows) + _profiles(rows)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_file(out + ".json", json.dumps(record, indent=1) + "\n")
    write_file(out + ".md", "\n".join(lines) + "\n")
    print("train_step: wrote %s.json and %s.md" % (out, out))


def _step_spread(rows):
    timed = [r for r in rows if r.get("step_ms")]
    if not timed:
        return []
    lines = ["", "Step times (ms): a mean well above the median means a few slow steps.", "",
             "| precision | --peft | median | mean | slowest | fastest |", "|---|---|---|---|---|---|"]
    for r in timed:
        steps = r["step_ms"]
        lines.append("| %s | %s | %.1f | %.1f | %.1f | %.1f |" % (
            r["precision_flag"], r["peft"], r["median_step_ms"], sum(steps) / len(steps),
            max(steps), min(steps)))
    return lines


def _profiles(rows):
    lines = []
    for r in (r for r in rows if "profile" in r):
        p = r["profile"]
        clock = "GPU kernels" if p["clock"] == "device" else "CPU operators"
        lines += ["", "## Profile: %s, --peft %s (%d steps under torch.profiler)" % (
            r["precision_flag"], r["peft"], p["steps"]), "",
            "Wall %.1f ms a step, of which %s were busy %.1f ms (%.0f%%)%s." % (
                p["wall_ms_per_step"], clock, p["busy_ms_per_step"], 100 * p["busy_share"],
                "; for the rest of the step the GPU ran nothing, waiting on the host"
                if p["clock"] == "device" else ""), "",
            "| fairseq phase | host ms a step |", "|---|---|"]
        lines += ["| %s | %.1f |" % (name, ms) for name, ms in p["phases"].items()]
        lines += ["", "| operator | calls a step | ms a step | share of busy |", "|---|---|---|---|"]
        lines += ["| `%s` | %.0f | %.2f | %.0f%% |" % (op["op"], op["calls_per_step"],
                                                     op["ms_per_step"], 100 * op["share_of_busy"])
                  for op in p["top"]]
    return lines


if __name__ == "__main__":
    sys.exit(main())
