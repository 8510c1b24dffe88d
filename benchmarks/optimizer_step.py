"""Optimizer step time: fairseq's `adam` against the plugin's `ehft_adamw` with each of its
kernels, on the same parameters and gradients (RoBERTa-shaped tensors, float32, CPU unless
--device cuda). Writes benchmarks/results/optimizer_step.{json,md}; prints how it was run.

    .venv/bin/python -m benchmarks.optimizer_step [--shapes minilm base] [--steps 20]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

from ehft_plugin.atomic import write_file

HERE = os.path.dirname(os.path.abspath(__file__))

# (layers, hidden, ffn, vocabulary, positions): all-MiniLM-L6-v2 as converted, RoBERTa base/large
SHAPES = {"minilm": (6, 384, 1536, 30526, 514), "base": (12, 768, 3072, 50265, 514),
          "large": (24, 1024, 4096, 50265, 514)}


def roberta_shapes(layers, hidden, ffn, vocab, positions, classes=2):
    """The trainable tensors of fairseq's RoBERTa with a sentence-classification head."""
    shapes = [(vocab, hidden), (positions, hidden), (hidden,), (hidden,)]
    for _ in range(layers):
        shapes += [(hidden, hidden), (hidden,)] * 4 + [(hidden,), (hidden,)]  # q k v out, LN
        shapes += [(ffn, hidden), (ffn,), (hidden, ffn), (hidden,), (hidden,), (hidden,)]
    shapes += [(hidden, hidden), (hidden,), (classes, hidden), (classes,)]  # head
    return shapes


def build(name, params, lr=1e-5):
    from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

    from ehft_plugin.optim.ehft_adamw import EhftAdamW, EhftAdamWConfig

    common = {"adam_betas": "(0.9,0.98)", "adam_eps": 1e-6, "weight_decay": 0.1, "lr": [lr]}
    if name == "fairseq adam":
        return FairseqAdam(FairseqAdamConfig(**common), params)
    return EhftAdamW(EhftAdamWConfig(adamw_kernel=name.split()[-1], **common), params)


def time_steps(name, shapes, steps, device):
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=generator).to(device).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator).to(device) * 1e-3
    optimizer = build(name, params)
    times = []
    for i in range(steps + 2):  # two warm-up steps create the state
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["minilm", "base"], choices=SHAPES)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "optimizer_step"))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("optimizer_step: skipped, no CUDA device")
        return
    kernels = ["fairseq adam", "ehft_adamw loop", "ehft_adamw foreach", "ehft_adamw fused"]
    run = {"command": " ".join(["python"] + sys.argv), "device": args.device,
           "machine": "%s, %d CPUs%s" % (platform.processor() or platform.machine(),
                                         os.cpu_count(), ", " + torch.cuda.get_device_name()
                                         if args.device == "cuda" else ""),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
           "python": platform.python_version(), "results": []}
    print("optimizer_step: %s" % json.dumps({k: v for k, v in run.items() if k != "results"}))
    for shape in args.shapes:
        shapes = roberta_shapes(*SHAPES[shape])
        numel = sum(torch.Size(s).numel() for s in shapes)
        for name in kernels:
            times = time_steps(name, shapes, args.steps, args.device)
            row = {"shapes": shape, "parameters": numel, "tensors": len(shapes),
                   "optimizer": name, "median_ms": 1e3 * statistics.median(times),
                   "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times)}
            run["results"].append(row)
            print("  %-7s %-20s median %8.1f ms  (min %.1f, max %.1f)" % (
                shape, name, row["median_ms"], row["min_ms"], row["max_ms"]))
    write(run, args.out)


def write(run, out):
    baseline = {r["shapes"]: r["median_ms"] for r in run["results"]
                if r["optimizer"] == "fairseq adam"}
    lines = ["# Optimizer step time (%s)" % run["device"], "",
             "Command: `%s`  " % run["command"],
             "Machine: %s; torch %s, %d threads, Python %s; median of %d steps after 2 warm-up "
             "steps; float32 parameters with gradients; lr 1e-5, betas (0.9,0.98), eps 1e-6, "
             "weight decay 0.1." % (run["machine"], run["torch"], run["threads"], run["python"],
                                    run["steps"]), "",
             "| shapes | parameters | optimizer | median ms/step | speed-up vs fairseq adam |",
             "|---|---|---|---|---|"]
    for r in run["results"]:
        lines.append("| %s | %.1fM in %d tensors | %s | %.1f | %.2fx |" % (
            r["shapes"], r["parameters"] / 1e6, r["tensors"], r["optimizer"], r["median_ms"],
            baseline[r["shapes"]] / r["median_ms"]))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    write_file(out + ".json", json.dumps(run, indent=1) + "\n")
    write_file(out + ".md", "\n".join(lines) + "\n")
    print("optimizer_step: wrote %s.json and %s.md" % (out, out))


if __name__ == "__main__":
    main()
