"""Speed and memory, side by side in one run: the plugin's training step against stock
fairseq and against HF transformers + HF PEFT, on the same backbone and the same real batches.

    .venv/bin/python -m benchmarks.speed [--backbone DIR] [--steps 15] [--rounds 6]
                                         [--hours H] [--resume] [--batch-size 32]

Default: the converted all-MiniLM-L6-v2, the GLUE RTE train pairs from
../shared/data truncated to 128 tokens (ehft prepare --max-length 128), batch 32, on CPU with
the machine's threads. Every configuration runs in a process of its own (peak memory is its
own) and reports which examples it timed, so that "the same batches" is checked, not assumed.

This machine's speed drifts by 5-30% over minutes, so the figures come in rounds: a round runs
every configuration once, in turn (the order reversed every other round), then the two
`ehft train` wall-time runs. A ratio is taken within each round and the rounds give it a 95%
interval. After every round the files are rewritten, so a stopped run loses one round at most;
`--resume` adds rounds to the saved ones (same settings and same code, else it refuses), and
`--hours` stops starting rounds when the next would not end in time.

Writes benchmarks/results.json (ratio keys, each with its raw figures), benchmarks/RESULTS.md
and benchmarks/results/speed.json (every measurement).

Longer than ~300 lines because the rounds, their resumption and the end-to-end wall-time
runs share one record format (speed.json); the figures are speed_report's.
"""

import argparse
import glob
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time

from benchmarks.speed_report import CHILD, TARGETS, write_results

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

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
WALL_METHODS = ("ft", "ehft-bitfit")
CHILD_SHARE = 0.3
HF = ["ft", "bitfit", "lora", "prefix"]

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
        # /proc/stat counts in clock ticks: over a short wall its rounding alone can pass 1
        return min(1.0, max(0.0, (busy - own) / (wall * os.cpu_count())))


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


def configurations(args, data, mask=None):
    """(name, command) of every measured configuration, in the order of an even round."""
    steps = [str(args.steps), str(args.warmup)]
    configs = [("stock fairseq ft (sentence_prediction)",
                [sys.executable, "-m", "benchmarks.bench", *steps,
                 *fairseq_argv(args, data, stock=True)])]
    configs += [(name, [sys.executable, "-m", "benchmarks.bench", *steps,
                        *fairseq_argv(args, data, False, peft, order),
                        *(["--child-tuning-mask", mask] if name == CHILD else [])])
                for name, peft, order in PLUGIN if name != CHILD or mask]
    configs += [("hf %s, random batches" % m,
                 [sys.executable, "-m", "benchmarks.hf_step", *steps, data, args.hf_model,
                  m, str(args.batch_size), "random"]) for m in HF]
    return configs


def relative_command(cmd):
    return " ".join(os.path.relpath(c, ROOT) if os.path.isabs(c) else c for c in map(str, cmd))


def measure_round(args, data, configs, number):
    """One round: every configuration once, then `ehft train` FT and EH-FT(BitFit). Odd rounds
    run in the reverse order, so a drift that is steady over a round favours no side."""
    order = configs if number % 2 == 0 else configs[::-1]
    load = OtherLoad()
    started = time.time()
    measurements = {}
    for name, cmd in order:
        row = json.loads(sh(cmd).strip().splitlines()[-1])
        measurements[name] = dict(row, command=relative_command(cmd))
        print("  round %d %-42s %6.2f seq/s %7.0f non-pad tokens/s  peak %5.0f MB  padding "
              "%.0f%%" % (number + 1, name, row["sequences_per_s"], row["tokens_per_s"],
                          row["peak_memory_mb"], 100 * row["padding_share"]), flush=True)
    walls, wall_stages = {}, {}
    for method in (WALL_METHODS if number % 2 == 0 else WALL_METHODS[::-1]):
        walls[method], wall_stages[method] = ehft_wall(args, data, method)
    print("  round %d ehft train, %d updates: ft %.0f s, ehft-bitfit %.0f s" % (
        number + 1, args.wall_updates, walls["ft"], walls["ehft-bitfit"]), flush=True)
    return {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(time.time() - started, 1), "other_cpu_share": load.share(),
            "measurements": measurements, "walls": walls, "wall_stages": wall_stages}


def ehft_wall(args, data, method):
    """(wall seconds of `ehft train` for `method`, where they went: stage_seconds)."""
    save_dir = os.path.join(ROOT, ".cache", "bench-runs", str(os.getpid()))
    start = time.perf_counter()
    sh([os.path.join(os.path.dirname(sys.executable), "ehft"), "train", "--method", method,
        "--data", data, "--checkpoint", os.path.join(args.backbone, "model.pt"),
        "--save-dir", save_dir,
        "--total-updates", args.wall_updates, "--batch-size", args.batch_size, "--overwrite",
        # the same updates in all as ft: what a second stage costs beyond its updates
        "--stage1-ratio", "0.1", "--", "--cpu", "--num-workers", "0"])
    seconds = time.perf_counter() - start
    return seconds, stage_seconds(glob.glob(os.path.join(save_dir, "*", method, "seed1"))[0],
                                  seconds)


def stage_timings(run_dir):
    """{stage: its timings from its done.json} (start checkpoint, fairseq-train process, its
    training loop, hand-over) of one `ehft train` run (a seed's folder)."""
    stages = {}
    for done in sorted(glob.glob(os.path.join(run_dir, "*", "done.json"))):
        with open(done) as f:
            stages[os.path.basename(os.path.dirname(done))] = json.load(f).get("seconds", {})
    return stages


def stages_wall(stages):
    """The wall seconds the stages spent: every timing but the training loop, which lies
    inside its fairseq-train process."""
    from ehft_plugin.train.rundir.files import wall_seconds

    return sum(wall_seconds(s) for s in stages.values())


def stage_seconds(run_dir, total):
    """stage_timings, and `launcher`: the rest of `total`, i.e. the ehft process's own
    start-up, checks and reading of the original checkpoint."""
    stages = stage_timings(run_dir)
    return {"stages": stages, "launcher": total - stages_wall(stages)}


def code_digest():
    """What the measured code is: the plugin's sources, the measuring step's (bench.py) and
    the HF step's. Rounds share an interval only when they measured the same code."""
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(ROOT, "ehft_plugin", "**", "*.py"), recursive=True)
                       ) + [os.path.join(HERE, "bench.py"), os.path.join(HERE, "hf_step.py")]:
        digest.update(os.path.relpath(path, ROOT).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


SETTINGS = ("machine", "threads", "python", "torch", "backbone", "batch_size", "max_length",
            "steps", "warmup", "wall_updates", "child_examples", "code")


def resumed_rounds(out, run):
    """The saved rounds of a run with the same settings and code, else a one-line refusal."""
    path = os.path.join(out, "results", "speed.json")
    if not os.path.isfile(path):
        raise SystemExit("speed: --resume: no saved run at %s; start one without --resume"
                         % path)
    with open(path) as f:
        saved = json.load(f)
    if "rounds" not in saved:
        raise SystemExit("speed: --resume: %s was written before runs came in rounds; start "
                         "a new run without --resume" % path)
    for key in SETTINGS:
        if saved["run"].get(key) != run.get(key):
            what = ("the measured code changed since its rounds (ehft_plugin/ or "
                    "benchmarks/hf_step.py)" if key == "code" else
                    "its rounds were measured with %s=%s, this run has %s"
                    % (key, saved["run"].get(key), run.get(key)))
            raise SystemExit("speed: --resume: %s: %s; rounds share an interval only when "
                             "measured alike: start a new run without --resume"
                             % (path, what))
    return saved["run"]["slices"], saved["rounds"]


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
    parser.add_argument("--rounds", type=int, default=6,
                        help="rounds in all (with --resume, the saved ones count): each "
                             "runs every configuration once, in turn")
    parser.add_argument("--hours", type=float,
                        help="start no round that would end after this many hours (each "
                             "round's length is taken from the one before)")
    parser.add_argument("--resume", action="store_true",
                        help="add rounds to the saved run in OUT/results/speed.json")
    parser.add_argument("--wall-updates", type=int, default=100,
                        help="total updates of the end-to-end FT vs EH-FT wall-time runs")
    parser.add_argument("--child-examples", type=int,
                        help="training examples for Child-Tuning_D's Fisher pass (default: "
                             "all, as the method does)")
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args()
    if args.rounds < 1 or (args.hours is not None and args.hours <= 0):
        parser.error("--rounds must be at least 1 and --hours above 0")
    args.hf_model = args.hf_model or json.load(open(os.path.join(
        args.backbone, "ehft_backbone.json")))["source"]
    import torch

    run = {"command": " ".join(["python", "-m", "benchmarks.speed"] + sys.argv[1:]),
           "machine": "%s, %d cores" % (platform.machine(), os.cpu_count()),
           "threads": torch.get_num_threads(), "python": platform.python_version(),
           "torch": torch.__version__, "backbone": os.path.relpath(args.backbone, ROOT),
           "batch_size": args.batch_size, "max_length": args.max_length,
           "steps": args.steps, "warmup": args.warmup, "wall_updates": args.wall_updates,
           "child_examples": args.child_examples, "code": code_digest()}
    slices, rounds = resumed_rounds(args.out, run) if args.resume else ([], [])
    print("speed: %s" % json.dumps(run), flush=True)
    if len(rounds) >= args.rounds:
        raise SystemExit("speed: %d rounds are saved already; --rounds %d asks no more"
                         % (len(rounds), args.rounds))
    data = prepare(args)
    this = {"command": run["command"],
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rounds": 0}
    configs = configurations(args, data, child_mask(args, data, this))
    run = dict(run, command=slices[0]["command"] if slices else run["command"],
               slices=slices + [this])
    start = time.time()
    while len(rounds) < args.rounds:
        last = rounds[-1]["seconds"] if this["rounds"] else 0
        if args.hours and this["rounds"] and time.time() - start + last > args.hours * 3600:
            print("speed: --hours %g: the next round would end too late; stopping after %d "
                  "rounds (%d saved in all)" % (args.hours, this["rounds"], len(rounds)))
            break
        rounds.append(measure_round(args, data, configs, len(rounds)))
        this["rounds"] += 1
        results = write_results(args.out, run, rounds)
        print("speed: round %d of %d written (%.0f s, other processes %s of the CPU)" % (
            len(rounds), args.rounds, rounds[-1]["seconds"],
            "?" if rounds[-1]["other_cpu_share"] is None
            else "%.1f%%" % (100 * rounds[-1]["other_cpu_share"])), flush=True)
    for key in TARGETS:
        entry = results[key]
        print("  %-24s %.3f  95%% %s  target %.3f  %s" % (
            key, entry["value"], "[%.3f, %.3f]" % tuple(entry["ci95"]) if entry["ci95"]
            else "(one round)", entry["target"],
            {True: "met", False: "missed", None: "unresolved"}[entry["met"]]))
    print("speed: wrote %s" % ", ".join(os.path.join(args.out, f) for f in (
        "results.json", "RESULTS.md", "results/speed.json")))


if __name__ == "__main__":
    main()
