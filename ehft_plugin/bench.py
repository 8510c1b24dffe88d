"""Training throughput measured the way fairseq-train trains: fairseq's Trainer, the task's
batches, the chosen --peft plan, optimizer and precision; nothing re-implemented.

One configuration per process (peak memory is per process): `measure(fairseq_argv, ...)`
builds the trainer from fairseq-train's own argument parser, takes `warmup` steps, then times
`steps` steps. Model FLOPs follow PaLM (Chowdhery et al. 2022, appendix B): 6N per token for
the weights of the encoder's matrix multiplications plus 12·L·d·s for attention, counted on
non-padding tokens, over the machine's matmul peak measured in the same process.
"""

import hashlib
import os
import platform
import resource
import statistics
import time

import torch


def build_trainer(fairseq_argv):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    from .distributed import early_checks

    args = options.parse_args_and_arch(options.get_training_parser(), input_args=fairseq_argv)
    cfg = convert_namespace_to_omegaconf(args)
    early_checks(cfg)  # as fairseq-train's call_main does with the plugin
    torch.manual_seed(cfg.common.seed)
    task = tasks.setup_task(cfg.task)
    task.load_dataset(cfg.dataset.train_subset)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    return cfg, trainer


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device, dtype, size=2048, repeats=10):
    """Best FLOP/s of a square matmul in `dtype` on `device` (the machine's practical peak)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def flops_per_token(model, mean_length):
    """Training FLOPs per token: 6 x the encoder's matmul weights + 12 L d s of attention."""
    encoder = model.encoder.sentence_encoder
    matmul = sum(m.weight.numel() for m in encoder.layers.modules()
                 if isinstance(m, torch.nn.Linear))
    layers, dim = len(encoder.layers), encoder.embed_tokens.embedding_dim
    return 6 * matmul + 12 * layers * dim * mean_length


def measure(fairseq_argv, steps=20, warmup=3):
    """Sequences/s, non-padding and padded tokens/s, step time, peak memory and MFU."""
    from fairseq import checkpoint_utils

    cfg, trainer = build_trainer(fairseq_argv)
    device = trainer.device
    # --finetune-from-model / --restore-file exactly as fairseq-train reads them
    _, batches = checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)
    times, sequences, tokens, padded = [], 0, 0, 0
    digest = hashlib.sha1()  # which examples were timed, batch by batch: configurations that
    # claim to train on the same batches can be checked against each other
    iterator = batches.next_epoch_itr(shuffle=True)
    while len(times) < steps:
        sample = next(iterator, None)
        if sample is None:  # a short dataset: next epoch
            batches = trainer.get_train_iterator(batches.epoch + 1, load_dataset=False)
            iterator = batches.next_epoch_itr(shuffle=True)
            continue
        _sync(device)
        start = time.perf_counter()
        trainer.train_step([sample])  # one batch an update (--update-freq 1)
        _sync(device)
        if warmup > 0:
            warmup -= 1
            continue
        times.append(time.perf_counter() - start)
        digest.update(sample["id"].numpy().tobytes())
        sequences += sample["nsentences"]
        tokens += sample["ntokens"]
        padded += sum(v["src_tokens"].numel() for k, v in sample.items()
                      if k.startswith("net_input"))
    seconds = sum(times)
    model = trainer.model
    dtype = torch.float16 if cfg.common.fp16 else torch.bfloat16 if cfg.common.bf16 \
        else torch.float32
    # large enough to reach the peak; a CPU without bfloat16 units runs them ~100x slower
    size = 8192 if device.type == "cuda" else 2048 if dtype == torch.float32 else 512
    peak = matmul_peak(device, dtype, size=size)
    achieved = flops_per_token(model, tokens / sequences) * tokens / seconds
    return {
        "steps": len(times), "seconds": seconds, "median_step_ms": 1e3 * statistics.median(times),
        "sequences_per_s": sequences / seconds, "tokens_per_s": tokens / seconds,
        "padded_tokens_per_s": padded / seconds, "padding_share": 1 - tokens / padded,
        "peak_memory_mb": peak_memory_mb(device), "precision": str(dtype).replace("torch.", ""),
        "device": _device_name(device), "model_flops_per_s": achieved,
        "matmul_peak_flops_per_s": peak, "mfu": achieved / peak,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "batches_digest": digest.hexdigest(),
    }


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10  # KiB on Linux


def _device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU (%s, %d cores)" % (platform.machine(), os.cpu_count())


def main(argv=None):
    """`python -m ehft_plugin.bench STEPS WARMUP FAIRSEQ_ARGS...`: one configuration, one JSON
    line on stdout (benchmarks run each configuration in a process of its own)."""
    import json
    import logging
    import sys

    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print(json.dumps(measure(argv[2:], steps=int(argv[0]), warmup=int(argv[1]))))


if __name__ == "__main__":
    main()
