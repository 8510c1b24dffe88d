"""Training throughput measured the way fairseq-train trains: fairseq's Trainer, the task's
batches, the chosen --peft plan, optimizer and precision; nothing re-implemented.

One configuration per process (peak memory is per process): `measure(fairseq_argv, ...)`
builds the trainer from fairseq-train's own argument parser, takes `warmup` steps, then times
`steps` steps. Model FLOPs follow PaLM (Chowdhery et al. 2022, appendix B): 6N per token for
the trained weights of the encoder's matrix multiplications (4N for frozen ones, which need no
weight gradient) plus 12·L·d·s for attention, counted on non-padding tokens, over the
machine's matmul peak measured in the same process.
"""

import hashlib
import os
import platform
import resource
import statistics
import time

import torch


def build_trainer(fairseq_argv):
    import ehft_plugin
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    from ehft_plugin.fairseq_compat.preflight import check

    ehft_plugin.register()

    args = options.parse_args_and_arch(options.get_training_parser(), input_args=fairseq_argv)
    cfg = convert_namespace_to_omegaconf(args)
    check(cfg)  # as fairseq-train's call_main does with the plugin
    torch.manual_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    task.load_dataset(cfg.dataset.train_subset)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    return cfg, trainer


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, dtype, size=2048, repeats=10, seconds=1.0):
    """Best FLOP/s of a square matmul in `dtype` on `device` (the machine's practical peak):
    the fastest of up to `repeats` + 2 runs, stopping once `seconds` have gone by after the
    third (on a slow CPU a run takes a third of a second, and more runs find no faster one)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best, spent = float("inf"), 0.0
    for run in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if run >= 2 and spent > seconds:
            break
    return 2 * size ** 3 / best


def flops_per_token(model, mean_length):
    """Training FLOPs per token of the encoder's matrix multiplications.

    A trained weight costs 6 per parameter (forward, input gradient, weight gradient), a frozen
    one 4 (no weight gradient: BitFit, LoRA's base weights, prefix-tuning); LoRA's A and B are
    trained weights of their own. Attention's score and value products add 12·L·d·s. Layer 0's
    input gradient is counted even where nothing below it trains (1/L of the frozen part).
    """
    encoder = model.encoder.sentence_encoder
    matmul = 0
    for module in encoder.layers.modules():
        if isinstance(module, torch.nn.Linear):
            matmul += (6 if module.weight.requires_grad else 4) * module.weight.numel()
        for name in ("lora_A", "lora_B"):
            if isinstance(getattr(module, name, None), torch.nn.Parameter):
                matmul += 6 * getattr(module, name).numel()
    layers, dim = len(encoder.layers), encoder.embed_tokens.embedding_dim
    return matmul + 12 * layers * dim * mean_length


# fairseq's own record_function() names around the parts of an update (Trainer.train_step and
# FairseqTask.train_step): where a step's time goes, without instrumenting anything
PHASES = ("forward", "backward", "reduce-grads", "multiply-grads", "clip-grads", "optimizer")


def profile_steps(trainer, samples, steps, top=15):
    """`steps` more updates under torch.profiler: wall time per step, how much of it the device
    (on CUDA: its kernels) or the CPU (otherwise) was busy, fairseq's phases and the operators
    that took most of it. On a GPU, device time far below wall time says the step waits on the
    host (Python, kernel launches, synchronisation), not on the GPU's arithmetic."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    device = trainer.device
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step([next(samples)])
        _sync(device)
        wall = time.perf_counter() - start
    averages = prof.key_averages()
    # self times add up without double counting (microseconds in the profiler's tables). On a
    # GPU an operator's kernels are listed twice, as the kernels themselves and as the device
    # time of the operator that launched them: busy time counts the kernels, the ranking the
    # operators (readable names); fairseq's phases and other annotations are spans, not work
    own = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in averages if not e.is_user_annotation and e.key not in PHASES]
    ops = [e for e in events if e.device_type == DeviceType.CPU]
    work = [e for e in events if e.device_type == DeviceType.CUDA] if cuda else ops
    busy = sum(getattr(e, own) for e in work) / 1e3
    # each phase's span on the host; its kernels are not attributed (on a GPU, autograd
    # launches the backward kernels from a thread of its own)
    phases = {e.key: e.cpu_time_total / 1e3 / steps for e in averages
              if e.key in PHASES and e.device_type == DeviceType.CPU}
    ranked = sorted(ops, key=lambda e: -getattr(e, own))[:top]
    return {
        "steps": steps, "clock": "device" if cuda else "cpu",
        "wall_ms_per_step": 1e3 * wall / steps, "busy_ms_per_step": busy / steps,
        "busy_share": busy / (1e3 * wall) if wall else 0.0, "phases": phases,
        "top": [{"op": e.key, "calls_per_step": e.count / steps,
                 "ms_per_step": getattr(e, own) / 1e3 / steps,
                 "share_of_busy": getattr(e, own) / 1e3 / busy if busy else 0.0}
                for e in ranked],
    }


def warm_and_timed(draw, steps, warmup, replay):
    """(warm-up batches, timed batches) from the iterator `draw`: `warmup` batches then
    `steps` others, or with `replay` the `steps` timed ones twice (every shape a timed step
    meets seen before)."""
    if replay:
        timed = [next(draw) for _ in range(steps)]
        return timed, timed
    return [next(draw) for _ in range(warmup)], (next(draw) for _ in range(steps))


def timed_call(device, fn, *args):
    """Seconds `fn(*args)` takes, the device's queue drained before and after."""
    _sync(device)
    start = time.perf_counter()
    fn(*args)
    _sync(device)
    return time.perf_counter() - start


def _endless(trainer, batches):
    """The training batches, epoch after epoch (a short dataset runs out within the timing)."""
    while True:
        yield from batches.next_epoch_itr(shuffle=True)
        batches = trainer.get_train_iterator(batches.epoch + 1, load_dataset=False)


def measure(fairseq_argv, steps=20, warmup=3, profile=0, replay=False):
    """Sequences/s, non-padding and padded tokens/s, step time, peak memory, MFU and the
    updates really taken (an fp16 overflow skips one); with `profile` > 0, that many more
    steps under torch.profiler (see profile_steps). `replay`: the warm-up is the timed
    batches themselves, once, so every shape a timed step meets has been seen (`warmup` is
    then ignored)."""
    from fairseq import checkpoint_utils

    cfg, trainer = build_trainer(fairseq_argv)
    device = trainer.device
    # fairseq's Trainer resets CUDA's peak-memory counter after every step (for its gb_free
    # log), which would leave the peak of the step's tail only; its log is not needed here
    trainer.cuda_env = None
    # --finetune-from-model / --restore-file exactly as fairseq-train reads them
    _, batches = checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)
    times, warmup_times, sequences, tokens, padded = [], [], 0, 0, 0
    digest = hashlib.sha1()  # which examples were timed, batch by batch: configurations that
    # claim to train on the same batches can be checked against each other
    samples = _endless(trainer, batches)
    warm, timed = warm_and_timed(samples, steps, warmup, replay)
    for sample in warm:  # first-seen shapes, allocator growth, kernel choice
        warmup_times.append(timed_call(device, trainer.train_step, [sample]))
    before = trainer.get_num_updates()
    for sample in timed:  # one batch an update (--update-freq 1)
        times.append(timed_call(device, trainer.train_step, [sample]))
        digest.update(sample["id"].numpy().tobytes())
        sequences += sample["nsentences"]
        tokens += sample["ntokens"]
        padded += sum(v["src_tokens"].numel() for k, v in sample.items()
                      if k.startswith("net_input"))
    updates = trainer.get_num_updates() - before
    seconds = sum(times)
    profiled = profile_steps(trainer, samples, profile) if profile > 0 else None
    model = trainer.model
    dtype = torch.float16 if cfg.common.fp16 else torch.bfloat16 if cfg.common.bf16 \
        else torch.float32
    # large enough to reach the peak; a CPU without bfloat16 units runs them ~100x slower
    size = 8192 if device.type == "cuda" else 2048 if dtype == torch.float32 else 512
    peak = matmul_peak(device, dtype, size=size)
    achieved = flops_per_token(model, tokens / sequences) * tokens / seconds
    result = {
        "steps": len(times), "seconds": seconds, "median_step_ms": 1e3 * statistics.median(times),
        # every step: a mean far above the median is a few slow steps, not a slow step
        "step_ms": [round(1e3 * t, 3) for t in times],
        "p90_step_ms": 1e3 * percentile(times, 0.9), "max_step_ms": 1e3 * max(times),
        "warmup_steps": len(warmup_times), "warmup_seconds": sum(warmup_times),
        "sequences_per_s": sequences / seconds, "tokens_per_s": tokens / seconds,
        "padded_tokens_per_s": padded / seconds, "padding_share": 1 - tokens / padded,
        "peak_memory_mb": peak_memory_mb(device), "precision": str(dtype).replace("torch.", ""),
        "device": _device_name(device), "model_flops_per_s": achieved,
        "matmul_peak_flops_per_s": peak, "mfu": achieved / peak,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "batches_digest": digest.hexdigest(), "updates": updates, "replayed_warmup": replay,
    }
    if profiled:
        result["profile"] = profiled
    return result


def percentile(values, q):
    """The q-quantile of `values`, by linear interpolation between order statistics."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10  # KiB on Linux


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU (%s, %d cores)" % (platform.machine(), os.cpu_count())


def main(argv=None):
    """`python -m benchmarks.bench STEPS WARMUP [--profile N] FAIRSEQ_ARGS...`: one
    configuration, one JSON line on stdout (benchmarks run each configuration in a process of
    its own)."""
    import json
    import logging
    import sys

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    steps, warmup, rest = int(argv[0]), int(argv[1]), argv[2:]
    profile = 0
    if rest[:1] == ["--profile"]:
        profile, rest = int(rest[1]), rest[2:]
    print(json.dumps(measure(rest, steps=steps, warmup=warmup, profile=profile)))


if __name__ == "__main__":
    main()
