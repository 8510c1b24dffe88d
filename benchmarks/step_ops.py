"""Operations and host synchronisations per training step, counted without a GPU.

    .venv/bin/python -m benchmarks.step_ops [--label after] [--steps 3] [--batch-size 8]
    .venv/bin/python -m benchmarks.step_ops --shape tiny --out DIR        # (tests)

On RTE-sized batches a GPU finishes a step's arithmetic in a few milliseconds, so a step is
bound by how fast the host issues kernels and how often it stops to wait for the GPU. Both
are properties of the code, not of the device, and are counted here on a CPU: every aten
operation of `--steps` training steps (forward, backward, gradient clipping, optimizer step,
the metrics logged) is seen by a TorchDispatchMode, after `--warmup` steps.

- *launches*: operations that run a kernel on a GPU (views, aliases and allocations such as
  `empty` excluded). `_foreach_*` operations count once, as on a GPU they launch a few
  kernels for many tensors.
- *host syncs*: reads of a device tensor's value on the host (`.item()`, `bool(t)`,
  `int(t)`, `float(t)`: `aten::_local_scalar_dense`; `.tolist()`, `.numpy()`, `.cpu()`),
  and operations whose CUDA kernels read sizes on the host (`bincount`, `nonzero`,
  `masked_select`, `unique`, `repeat_interleave` without an output size, indexing with a
  boolean mask, `equal`). Each comes with the line of code that asked for it.

Configurations, all on the same RTE batches (GPT-2 BPE, fairseq's random order, seed 1): stock
fairseq (`--task sentence_prediction --criterion sentence_prediction`, Adam), the plugin's
FT, BitFit, LoRA (r=8 on q, k, v, out), prefix (16 tokens), Mixout (p=0.7) and
Child-Tuning_D (a 30% mask), in fp16 as a GPU trains them (fairseq's FP16Optimizer and
dynamic loss scaler, which run on a CPU for counting although `fairseq-train --cpu` refuses
fp16), plugin FT in bf16; HF transformers' RobertaForSequenceClassification (+ HF PEFT for
LoRA and prefix) stepping as transformers.Trainer does on a GPU in fp16 (autocast,
GradScaler, gradient clipping at 1.0, AdamW). The model has RoBERTa-large's depth (24 layers)
and a tiny width: the number of operations does not depend on the width or the batch size.
Besides the step, the cost of reading the metrics once (what fairseq-train does every
--log-interval updates) is counted on its own.

Writes benchmarks/results-ops.json (per label: every configuration's counts, each sync's
site, the targets as {value, target, met}) and benchmarks/RESULTS-ops.md. Labels keep a
before/after history: `--label before` was measured on the code before the fixes, and a
new run with another label keeps the others.

Longer than ~300 lines because the counter, the three peers it counts and the report of
their targets change together whenever a count does; split, one measurement would be read
across four files.
"""

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
import traceback
import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# layers, dim, ffn, heads; minilm-random: all-MiniLM-L6-v2's shape (the CPU comparison with HF)
SHAPES = {"large-depth": (24, 32, 64, 4), "minilm-random": (6, 384, 1536, 12),
          "tiny": (2, 32, 64, 4)}
MATMULS = ("mm", "addmm", "bmm", "baddbmm")
LORA_PLAN = "all:lora(r=8,alpha=16,dropout=0,targets=q+k+v+out)"  # = speed_cuda's
PREFIX_PLAN = "all:prefix(len=16)"
MIXOUT = "mixout(p=0.7)"
CHILD_SHARE = 0.3
# (name, kind, keyword arguments); fp16 unless the keywords say otherwise
CONFIGURATIONS = [
    ("stock fairseq ft", "fairseq", dict(stock=True)),
    ("plugin ft", "fairseq", dict(peft="full")),
    ("plugin bitfit", "fairseq", dict(peft="bitfit")),
    ("plugin lora", "fairseq", dict(peft=LORA_PLAN)),
    ("plugin prefix", "fairseq", dict(peft=PREFIX_PLAN)),
    ("plugin mixout", "fairseq", dict(peft=MIXOUT)),
    ("plugin child-tuning-d", "fairseq", dict(peft="full", child=True)),
    ("plugin ft, bf16", "fairseq", dict(peft="full", precision="bf16")),
    ("hf ft", "hf", dict(method="ft")),
    ("hf bitfit", "hf", dict(method="bitfit")),
    ("hf lora (peft)", "hf", dict(method="lora")),
    ("hf prefix (peft)", "hf", dict(method="prefix")),
]
PLUGIN_METHODS = [name for name, kind, _ in CONFIGURATIONS if name.startswith("plugin")]
TARGETS = {  # key: (what, target, "max" | "min")
    "ft_launches_vs_fairseq": ("plugin FT launches / stock fairseq's", 1.0, "max"),
    "ft_launches_vs_hf": ("plugin FT launches / HF's", 1.0, "max"),
    "lora_launches_vs_bitfit": ("plugin LoRA launches / plugin BitFit's", 1.3, "max"),
    "prefix_launches_vs_bitfit": ("plugin prefix launches / plugin BitFit's", 1.15, "max"),
}
SYNC_TARGET = 2  # host syncs per step, every plugin method: the loss scaler's overflow check

# operations that run no kernel on a GPU: the schema's views and aliases (func.is_view), and
# these, which only allocate or relabel
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
             "_unsafe_view", "_reshape_alias", "lift_fresh", "set_", "resize_"}
# operations whose CUDA kernels read a size or value on the host
SYNCING = {"_local_scalar_dense", "bincount", "nonzero", "masked_select", "unique",
           "_unique", "_unique2", "unique_dim", "unique_consecutive", "equal", "argwhere"}
HOST_READS = {"tolist", "numpy", "cpu"}  # Tensor methods that copy to the host (no aten op
# on a CPU tensor, so they are seen a level up)


def code_site(skip=__file__):
    """`path:line function` of the innermost frame outside torch and this file."""
    for frame in reversed(traceback.extract_stack()):
        path = frame.filename
        if "/torch/" in path or path == skip or path.startswith("<"):
            continue
        for cut in ("site-packages/", ROOT + os.sep):
            if cut in path:
                path = path.split(cut, 1)[1]
        return "%s:%d %s" % (path, frame.lineno, frame.name)
    return "?"


def _has_bool_index(args):
    indices = args[1] if len(args) > 1 else ()
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in (indices or ()))


class OpCounter(TorchDispatchMode):
    """Counts every aten operation dispatched while active: by name, launches and syncs.

    On a CPU every tensor is on the host; a GPU run has a few there too: what `.cpu()`
    copied, and whatever is computed from such tensors alone. Those are tracked (`host`),
    and reading them is no sync."""

    def __init__(self):
        super().__init__()
        self.ops = collections.Counter()
        self.launches = 0
        self.syncs = collections.Counter()  # (operation, site)
        self.host = weakref.WeakSet()
        self.bytes = 0  # read and written by kernels: every input and output, once
        self.flops = 0  # of the matrix products

    def sync(self, what):
        self.syncs[(what, code_site())] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.ops[name] += 1
        inputs = [t for t in tree_flatten((args, kwargs))[0] if torch.is_tensor(t)]
        kernel = not func.is_view and name not in NO_KERNEL
        if kernel:
            self.launches += 1
            self.bytes += sum(t.numel() * t.element_size() for t in inputs)
            if name in MATMULS:  # 2·m·n·k: the last two dimensions of the two factors
                a, b = inputs[-2], inputs[-1]
                self.flops += 2 * a.numel() * b.shape[-1]
        on_host = bool(inputs) and all(t in self.host for t in inputs)
        if not on_host and (name in SYNCING or (
                name in ("index", "index_put_", "index_put") and _has_bool_index(args)) or (
                name == "repeat_interleave" and torch.is_tensor(args[0])
                and (kwargs or {}).get("output_size") is None and len(args) < 4)):
            self.sync(name + ("[bool]" if name.startswith("index") else ""))
        out = func(*args, **(kwargs or {}))
        if kernel:
            self.bytes += sum(t.numel() * t.element_size() for t in tree_flatten(out)[0]
                              if torch.is_tensor(t))
        if on_host:
            for t in tree_flatten(out)[0]:
                if torch.is_tensor(t):
                    self.host.add(t)
        return out


class HostReadCounter(TorchFunctionMode):
    """Sees `.tolist()`, `.numpy()` and `.cpu()`, which dispatch nothing on a CPU tensor;
    what `.cpu()` returns is a new host tensor, as on a GPU."""

    def __init__(self, counter):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", None)
        if name not in HOST_READS or not torch.is_tensor(args[0]) \
                or args[0] in self.counter.host:
            return func(*args, **(kwargs or {}))
        self.counter.sync("Tensor." + name)
        out = func(*args, **(kwargs or {}))
        if name == "cpu":
            out = out.clone() if out is args[0] else out
            self.counter.host.add(out)
        return out


def count(step, steps):
    """Counts of `steps` calls of `step()`, per step."""
    counter = OpCounter()
    with HostReadCounter(counter), counter:
        for _ in range(steps):
            step()
    syncs = sorted(({"op": op, "site": site, "per_step": n / steps}
                    for (op, site), n in counter.syncs.items()),
                   key=lambda s: (-s["per_step"], s["site"]))
    return {"ops_per_step": sum(counter.ops.values()) / steps,
            "launches_per_step": counter.launches / steps,
            "syncs_per_step": sum(counter.syncs.values()) / steps, "syncs": syncs,
            "bytes_per_step": counter.bytes / steps, "matmul_flops_per_step": counter.flops / steps,
            "top_ops": {k: v / steps for k, v in counter.ops.most_common(12)}}


# ---- the plugin and stock fairseq: fairseq's Trainer, as fairseq-train steps it ----------

def fairseq_argv(args, data, peft="full", stock=False, precision=None, mask=None):
    """`precision`: the configuration's own (bf16), else --precision's (fp16 or fp32)."""
    from benchmarks import speed_cuda

    precision = precision or getattr(args, "precision", "fp16")
    speed_cuda.SHAPES.setdefault(args.shape, SHAPES[args.shape])
    argv = speed_cuda.fairseq_argv(argparse.Namespace(device="cpu", backbone=None), args.shape,
                                   data, "bf16" if precision == "fp32" else precision,
                                   stock=stock, peft=peft)
    if precision == "fp32":
        argv.remove("--bf16")
    argv[argv.index("--batch-size") + 1] = str(args.batch_size)
    return argv + (["--child-tuning-mask", mask] if mask else [])


def child_mask(args, data, out):
    """A random 30% child of the model's parameters (what the step costs does not depend on
    which entries are chosen), written as `ehft child-mask` writes one."""
    from benchmarks import bench
    from ehft_plugin.peft.child_tuning import choose_child, save_mask

    _, trainer = bench.build_trainer(fairseq_argv(args, data, precision="bf16"))
    generator = torch.Generator().manual_seed(1)
    fisher = {n: torch.rand(p.shape, generator=generator)
              for n, p in trainer.model.named_parameters()
              if p.requires_grad and not n.startswith("classification_heads.")}
    save_mask(choose_child(fisher, CHILD_SHARE), out, CHILD_SHARE, 0)
    return out


def build_trainer(argv):
    """fairseq-train's Trainer for `argv`, in a process where only what `argv` names is loaded:
    stock fairseq's configuration runs without the plugin (its --user-dir, as fairseq-train
    imports it, brings the plugin and its changes to fairseq). fp16 as a GPU runs it, here
    only to count it: `fairseq-train --cpu` refuses --fp16 with the plugin, and FP16Optimizer
    keys its flat fp32 buffer by CUDA's current device index and copies the gradients of the
    parameters whose `device.index` matches it (None for a CPU tensor)."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    if not torch.cuda.is_available():  # a CPU tensor's device index, as fairseq groups them
        torch.cuda.current_device = lambda: None
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(
        options.get_training_parser(), input_args=argv))
    if "ehft_plugin" in sys.modules:  # as the plugin's fairseq-train does, fp16 allowed
        from ehft_plugin.fairseq_compat import preflight

        preflight.bf16_without_tpu(cfg)
    torch.manual_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    task.load_dataset(cfg.dataset.train_subset)
    model = task.build_model(cfg.model)
    return cfg, Trainer(cfg, task, model, task.build_criterion(cfg.criterion))


def fairseq_counts(argv, steps, warmup):
    from fairseq import checkpoint_utils, metrics

    cfg, trainer = build_trainer(argv)
    _, batches = checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)
    # drawn before counting: collating a batch is host work on host tensors, not the step's
    epoch = batches.next_epoch_itr(shuffle=True)
    samples = iter([next(epoch) for _ in range(warmup + steps)])
    updates = []

    def step():  # fairseq_cli/train.py's loop body, without its log-interval branch
        before = trainer.get_num_updates()
        with metrics.aggregate("train_inner"):
            trainer.train_step([next(samples)])
        updates.append(trainer.get_num_updates() - before)

    for _ in range(warmup):
        step()
    del updates[:]
    row = count(step, steps)
    row["log_interval"] = count(lambda: metrics.get_smoothed_values("train_inner"), 1)
    row["updates"] = sum(updates)  # an fp16 overflow skips an update: counted, not hidden
    row["module_walks_ms"] = module_walks_ms(trainer.model)
    row["plugin_loaded"] = "ehft_plugin" in sys.modules
    row["command"] = "fairseq-train " + " ".join(
        os.path.relpath(a, ROOT) if os.path.isabs(a) else a for a in argv)
    return row


def module_walks_ms(model, repeats=50):
    """Host milliseconds of what fairseq's task does to the model before every update:
    `model.train()` and `model.set_num_updates(n)` (no kernels, but time a GPU waits on)."""
    import time

    out = {}
    for name, call in (("train", lambda: model.train()),
                       ("set_num_updates", lambda: model.set_num_updates(1))):
        call()
        start = time.perf_counter()
        for _ in range(repeats):
            call()
        out[name] = round(1e3 * (time.perf_counter() - start) / repeats, 3)
    return out


# ---- HF transformers (+ PEFT), as transformers.Trainer steps on a GPU -------------------

def hf_counts(args, data, method):
    from benchmarks import hf_step

    layers, dim, ffn, heads = SHAPES[args.shape]
    hf_step.RANDOM_ROBERTA.setdefault(args.shape, {
        "hidden_size": dim, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": ffn})
    torch.manual_seed(1)
    model = hf_step.hf_model("random:" + args.shape, method).train()
    optimizer, optimizer_name = hf_step.hf_optimizer(model)
    # fp16: as Trainer steps on a GPU (clipping at 1.0); fp32: as on a CPU (speed.py's HF step)
    take = hf_step.TrainerStep(model, optimizer, torch.device("cpu"), args.precision,
                               clip=args.precision != "fp32")
    drawn = hf_step.plugin_batches(data, args.batch_size, "random")  # drawn before counting
    batches = iter([next(drawn) for _ in range(args.warmup + args.steps)])
    for _ in range(args.warmup):
        take(next(batches)[1])
    row = count(lambda: take(next(batches)[1]), args.steps)
    row["command"] = "hf_step.TrainerStep(random:%s, %s, %s, %s, %s)" % (
        args.shape, method, args.precision,
        "no clipping" if args.precision == "fp32" else "clip=1.0", optimizer_name)
    return row


# ---- targets and files -----------------------------------------------------------------

def targets(rows):
    def launches(name):
        row = rows.get(name)
        return row["launches_per_step"] if row and "error" not in row else None

    pairs = {"ft_launches_vs_fairseq": ("plugin ft", "stock fairseq ft"),
             "ft_launches_vs_hf": ("plugin ft", "hf ft"),
             "lora_launches_vs_bitfit": ("plugin lora", "plugin bitfit"),
             "prefix_launches_vs_bitfit": ("plugin prefix", "plugin bitfit")}
    out = {}
    for key, (num, den) in pairs.items():
        what, target, _ = TARGETS[key]
        a, b = launches(num), launches(den)
        if num not in rows or den not in rows:  # not run (--only): no target to judge
            continue
        value = a / b if a is not None and b else None
        out[key] = {"value": value, "target": target, "what": what,
                    "met": value is not None and value <= target}
    for name in PLUGIN_METHODS:
        row = rows.get(name)
        if row is None:
            continue
        value = row["syncs_per_step"] if "error" not in row else None
        out["syncs_" + name.replace("plugin ", "").replace(", ", "_").replace(" ", "_")] = {
            "value": value, "target": SYNC_TARGET, "what": "host syncs per step, " + name,
            "met": value is not None and value <= SYNC_TARGET}
    return out


def environment(args):
    import fairseq
    import transformers

    return {"command": "python -m benchmarks.step_ops " + " ".join(sys.argv[1:]),
            "shape": dict(zip(("layers", "dim", "ffn", "heads"), SHAPES[args.shape]),
                          name=args.shape),
            "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
            "precision": args.precision, "torch": torch.__version__, "fairseq": fairseq.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "data": "RTE train, GPT-2 BPE (ehft prepare rte --bpe gpt2)"}


def markdown(results):
    lines = ["# Operations and host syncs per training step", "",
             "Counted on a CPU by `benchmarks/step_ops.py` (a TorchDispatchMode sees every "
             "aten operation of a step: forward, backward, clipping, optimizer, metrics). "
             "Launches: operations that run a GPU kernel (views and allocations excluded). "
             "Host syncs: reads of a device value on the host, and operations whose CUDA "
             "kernel reads a size on the host. \"log read\": what reading the metrics once "
             "costs (fairseq-train does it every --log-interval updates).", ""]
    for label, run in results.items():
        how = run["how"]
        lines += ["## %s" % label, "", "`%s` at %s; torch %s, fairseq %s, transformers %s; "
                  "%d layers × dim %d; %s; batch %d; %d steps counted after %d." % (
                      how["command"], run.get("code", "?"), how["torch"], how["fairseq"],
                      how["transformers"], how["shape"]["layers"], how["shape"]["dim"],
                      how.get("precision", "fp16"), how["batch_size"], how["steps"],
                      how["warmup"]), "",
                  "| configuration | launches | ops | host syncs | log read: syncs | updates | "
                  "train() + set_num_updates, host ms | MB through kernels | matmul GFLOP |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, row in run["rows"].items():
            if "error" in row:
                lines.append("| %s | failed: %s | | | | | | | |" % (name, row["error"]))
                continue
            log = row.get("log_interval")
            walks = row.get("module_walks_ms")
            lines.append("| %s | %.0f | %.0f | %.2g | %s | %s | %s | %s | %s |" % (
                name, row["launches_per_step"], row["ops_per_step"], row["syncs_per_step"],
                "%.0f" % log["syncs_per_step"] if log else "—",
                "%d of %d" % (row["updates"], how["steps"]) if "updates" in row else "—",
                "%.2f + %.2f" % (walks["train"], walks["set_num_updates"]) if walks else "—",
                "%.0f" % (row["bytes_per_step"] / 1e6) if "bytes_per_step" in row else "—",
                "%.2f" % (row["matmul_flops_per_step"] / 1e9)
                if "matmul_flops_per_step" in row else "—"))
        met = [k for k, t in run["targets"].items() if t["met"]]
        lines += ["", "Targets met: %d of %d." % (len(met), len(run["targets"])), "",
                  "| target | value | goal | met |", "|---|---|---|---|"]
        for key, t in run["targets"].items():
            lines.append("| %s (%s) | %s | ≤ %g | %s |" % (
                key, t["what"], "—" if t["value"] is None else "%.3g" % t["value"], t["target"],
                "yes" if t["met"] else "**no**"))
        lines += ["", "Where each host sync comes from (per step):", ""]
        for name, row in run["rows"].items():
            for s in row.get("syncs", []):
                lines.append("- %s: %.2g × `%s` at `%s`" % (name, s["per_step"], s["op"],
                                                          s["site"]))
        lines.append("")
    return "\n".join(lines)


def code_version():
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ehft_plugin"],
                               capture_output=True, text=True, cwd=ROOT).stdout.strip()
        return head + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def run_one(args, name, kind, kwargs, data):
    """One configuration's counts, from a process of its own (see build_trainer)."""
    import subprocess

    if kind == "fairseq":
        mask = child_mask(args, data, os.path.join(args.work, "child.safetensors")) \
            if kwargs.pop("child", False) else None
        job = {"kind": kind, "argv": fairseq_argv(args, data, mask=mask, **kwargs)}
    else:
        job = {"kind": kind, "data": data, **kwargs}
    job.update(steps=args.steps, warmup=args.warmup, shape=args.shape,
               batch_size=args.batch_size, precision=args.precision)
    result = subprocess.run([sys.executable, "-m", "benchmarks.step_ops", "--job",
                             json.dumps(job)], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["exit status %d" % result.returncode]
        print(result.stderr[-3000:], file=sys.stderr)
        return {"error": lines[-1][:300]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def job(spec):
    spec = json.loads(spec)
    if spec["kind"] == "fairseq":
        return fairseq_counts(spec["argv"], spec["steps"], spec["warmup"])
    args = argparse.Namespace(**{k: spec[k] for k in ("steps", "warmup", "shape",
                                                      "batch_size", "precision")})
    return hf_counts(args, spec["data"], spec["method"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--shape", choices=SHAPES, default="large-depth")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16",
                        help="fp16: every configuration as a GPU trains it (default); fp32: as "
                             "a CPU does (HF without clipping, as benchmarks/speed.py)")
    parser.add_argument("--only", nargs="+", help="configurations whose name contains one of "
                        "these (default: all)")
    parser.add_argument("--out", default=HERE, help="folder of results-ops.json")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # one configuration, in a child
    args = parser.parse_args(argv)
    if args.job:
        print(json.dumps(job(args.job)))
        return None
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    from benchmarks import speed_cuda

    from ehft_plugin.atomic import write_file

    data = speed_cuda.prepare("large", "rte", None)  # RTE with the GPT-2 BPE, cached
    path = os.path.join(args.out, "results-ops.json")
    results = json.load(open(path)) if os.path.isfile(path) else {}
    rows = {}
    with tempfile.TemporaryDirectory() as work:
        args.work = work
        for name, kind, kwargs in CONFIGURATIONS:
            if args.only and not any(o in name for o in args.only):
                continue
            rows[name] = row = run_one(args, name, kind, dict(kwargs), data)
            print("step_ops: %-24s %s" % (name, row.get("error") or
                                          "%6.0f launches %5.2g syncs" % (
                                              row["launches_per_step"],
                                              row["syncs_per_step"])), flush=True)
    results[args.label] = {"how": environment(args), "code": code_version(), "rows": rows,
                           "targets": targets(rows)}
    write_file(path, json.dumps(results, indent=1) + "\n")
    write_file(os.path.join(args.out, "RESULTS-ops.md"), markdown(results))
    return results


if __name__ == "__main__":
    main()
