"""The HF reference for benchmarks/speed.py and speed_cuda.py: transformers'
BertForSequenceClassification (+ HF PEFT for LoRA and prefix-tuning, manual freezing for
BitFit) trained on exactly the batches the plugin trains on (glue_ehft's batches of the same
seed, ids mapped to the WordPiece vocabulary), with HF Trainer's default optimizer. One
configuration per process:

    python -m benchmarks.hf_step STEPS WARMUP DATA HF_MODEL ft|bitfit|lora|prefix BATCH ORDER
                                 [DEVICE [PRECISION]]

HF_MODEL is a model directory, or `random:SHAPE` (large, base, minilm-random) for a
RobertaForSequenceClassification of that shape with random weights (the data's token ids are
used as they are: speed does not depend on which token an id means). DEVICE: cpu (default) or
cuda; PRECISION: fp32 (default), fp16 (autocast + GradScaler, as Trainer's fp16=True) or bf16
(autocast, as bf16=True). Like Trainer, the step clips gradients to norm 1.0 on CUDA.
"""

import hashlib
import json
import os
import statistics
import sys

import torch


from benchmarks.bench import peak_memory_mb

LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "target_modules": ["query", "key", "value", "attention.output.dense"]}
PREFIX_TOKENS = 16


RANDOM_ROBERTA = {  # fairseq's roberta_base / roberta_large shapes
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072},
    "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
              "intermediate_size": 4096},
    "minilm-random": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                      "intermediate_size": 1536},
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64},  # (tests)
}


def hf_model(model_dir, method):
    if model_dir.startswith("random:"):
        from transformers import RobertaConfig, RobertaForSequenceClassification

        config = RobertaConfig(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1,
                               pad_token_id=1, num_labels=2,
                               **RANDOM_ROBERTA[model_dir.split(":", 1)[1]])
        model, backbone = RobertaForSequenceClassification(config), "roberta."
    else:
        from transformers import BertForSequenceClassification

        model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
        backbone = "bert."
    if method == "bitfit":  # biases and the classifier (BERT's pooler included: it is the head)
        for name, param in model.named_parameters():
            param.requires_grad = name.endswith(".bias") or not name.startswith(backbone) \
                or name.startswith("bert.pooler.")
    elif method in ("lora", "prefix"):
        from peft import LoraConfig, PrefixTuningConfig, get_peft_model

        config = LoraConfig(task_type="SEQ_CLS", **LORA) if method == "lora" else \
            PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=PREFIX_TOKENS)
        model = get_peft_model(model, config)
    return model


def hf_optimizer(model):
    """What transformers.Trainer builds by default (TrainingArguments().optim)."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=os.devnull, learning_rate=1e-5, report_to=[])
    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return cls([p for p in model.parameters() if p.requires_grad], **kwargs), str(args.optim)


def plugin_batches(data, batch_size, order, seed=1):
    """glue_ehft's epoch-1 batches, as fairseq-train draws them for --seed 1."""
    from ehft_plugin.interop.convert import fairseq_order
    from ehft_plugin.tasks.glue_ehft import GlueEhftConfig, GlueEhftTask

    task = GlueEhftTask.setup_task(GlueEhftConfig(data=data, seed=seed, batch_order=order))
    dataset = task.load_dataset("train")
    vocab_file = os.path.join(data, "tokenizer", "vocab.txt")
    to_hf = None  # GPT-2 BPE data (random:* models): ids as they are
    if os.path.isfile(vocab_file):
        with open(vocab_file, encoding="utf-8") as f:
            to_hf = torch.tensor(fairseq_order([line.rstrip("\n") for line in f]))
    pad = task.source_dictionary.pad()
    iterator = task.get_batch_iterator(dataset, max_sentences=batch_size, seed=seed,
                                       max_positions=512)
    for epoch in range(1, 1000):
        for batch in iterator.next_epoch_itr(shuffle=True):
            tokens = batch["net_input"]["src_tokens"]
            ids = tokens if to_hf is None else to_hf[tokens]
            yield batch["id"], {"input_ids": ids, "attention_mask": (tokens != pad).long(),
                                "labels": batch["target"].view(-1)}, int(batch["ntokens"])
        iterator = task.get_batch_iterator(dataset, max_sentences=batch_size, seed=seed,
                                           max_positions=512, epoch=epoch + 1)


class TrainerStep:
    """One optimizer update as transformers.Trainer takes it, in its fp16/bf16 modes."""

    def __init__(self, model, optimizer, device, precision, clip=None):
        self.model, self.optimizer, self.device = model, optimizer, device
        # Trainer's max_grad_norm=1.0, on CUDA by default (clip=True: also on CPU)
        self.clip = device.type == "cuda" if clip is None else clip
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, inputs):
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = self.model(**inputs).loss
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def measure(data, model_dir, method, batch_size, order, steps, warmup, device="cpu",
            precision="fp32", replay=False):
    """As benchmarks.bench.measure: `replay` warms up on the timed batches themselves."""
    from benchmarks.bench import percentile, timed_call, warm_and_timed

    device = torch.device(device)
    torch.manual_seed(1)
    model = hf_model(model_dir, method).to(device).train()
    optimizer, optimizer_name = hf_optimizer(model)
    step = TrainerStep(model, optimizer, device, precision)
    times, warmup_times, sequences, tokens, padded, digest = [], [], 0, 0, 0, hashlib.sha1()
    warm, timed = warm_and_timed(plugin_batches(data, batch_size, order), steps, warmup, replay)
    for _, inputs, _ in warm:
        warmup_times.append(timed_call(device, step, inputs))
    before = _optimizer_steps(optimizer)
    for ids, inputs, ntokens in timed:
        times.append(timed_call(device, step, inputs))
        digest.update(ids.numpy().tobytes())
        sequences += len(ids)
        tokens += ntokens
        padded += inputs["input_ids"].numel()
    updates = _optimizer_steps(optimizer) - before
    seconds = sum(times)
    return {"steps": len(times), "seconds": seconds,
            "median_step_ms": 1e3 * statistics.median(times),
            "p90_step_ms": 1e3 * percentile(times, 0.9), "max_step_ms": 1e3 * max(times),
            "step_ms": [round(1e3 * t, 3) for t in times],
            "warmup_steps": len(warmup_times), "warmup_seconds": sum(warmup_times),
            "sequences_per_s": sequences / seconds, "tokens_per_s": tokens / seconds,
            "padded_tokens_per_s": padded / seconds, "padding_share": 1 - tokens / padded,
            "peak_memory_mb": peak_memory_mb(device), "precision": precision,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "optimizer": optimizer_name, "threads": torch.get_num_threads(),
            "batches_digest": digest.hexdigest(), "updates": updates,
            "replayed_warmup": replay}


def _optimizer_steps(optimizer):
    """Updates the optimizer has taken (GradScaler skips a step whose gradients overflowed):
    the step count of its first parameter's state, read after the timing."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            step = optimizer.state.get(param, {}).get("step")
            if step is not None:
                return int(step)
    return 0


if __name__ == "__main__":
    steps, warmup, data, model_dir, method, batch, order = sys.argv[1:8]
    device, precision = (sys.argv[8:] + ["cpu", "fp32"][len(sys.argv[8:]):])[:2]
    print(json.dumps(measure(data, model_dir, method, int(batch), order, int(steps),
                             int(warmup), device, precision)))
