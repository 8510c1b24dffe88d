"""The HF reference for benchmarks/speed.py: transformers' BertForSequenceClassification (+ HF
PEFT for LoRA and prefix-tuning, manual freezing for BitFit) trained on exactly the batches
the plugin trains on (glue_ehft's batches of the same seed, ids mapped to the WordPiece
vocabulary), with HF Trainer's default optimizer. One configuration per process:

    python benchmarks/hf_step.py STEPS WARMUP DATA HF_MODEL_DIR ft|bitfit|lora|prefix BATCH ORDER
"""

import hashlib
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ehft_plugin.bench import peak_memory_mb  # noqa: E402

LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "target_modules": ["query", "key", "value", "attention.output.dense"]}
PREFIX_TOKENS = 16


def hf_model(model_dir, method):
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    if method == "bitfit":  # biases and the classifier (pooler included: it is the head)
        for name, param in model.named_parameters():
            param.requires_grad = name.endswith(".bias") or not name.startswith("bert.") \
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
    from ehft_plugin.convert import fairseq_order
    from ehft_plugin.tasks.glue_ehft import GlueEhftConfig, GlueEhftTask

    task = GlueEhftTask.setup_task(GlueEhftConfig(data=data, seed=seed, batch_order=order))
    dataset = task.load_dataset("train")
    vocab_file = os.path.join(data, "tokenizer", "vocab.txt")
    with open(vocab_file, encoding="utf-8") as f:
        to_hf = torch.tensor(fairseq_order([line.rstrip("\n") for line in f]))
    pad = task.source_dictionary.pad()
    iterator = task.get_batch_iterator(dataset, max_sentences=batch_size, seed=seed,
                                       max_positions=512)
    for epoch in range(1, 1000):
        for batch in iterator.next_epoch_itr(shuffle=True):
            tokens = batch["net_input"]["src_tokens"]
            yield batch["id"], {"input_ids": to_hf[tokens], "attention_mask": (tokens != pad).long(),
                                "labels": batch["target"].view(-1)}, int(batch["ntokens"])
        iterator = task.get_batch_iterator(dataset, max_sentences=batch_size, seed=seed,
                                           max_positions=512, epoch=epoch + 1)


def measure(data, model_dir, method, batch_size, order, steps, warmup):
    torch.manual_seed(1)
    model = hf_model(model_dir, method).train()
    optimizer, optimizer_name = hf_optimizer(model)
    times, sequences, tokens, padded, digest = [], 0, 0, 0, hashlib.sha1()
    for ids, inputs, ntokens in plugin_batches(data, batch_size, order):
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - start
        if warmup > 0:
            warmup -= 1
            continue
        times.append(elapsed)
        digest.update(ids.numpy().tobytes())
        sequences += len(ids)
        tokens += ntokens
        padded += inputs["input_ids"].numel()
        if len(times) == steps:
            break
    seconds = sum(times)
    return {"steps": len(times), "seconds": seconds,
            "median_step_ms": 1e3 * statistics.median(times),
            "sequences_per_s": sequences / seconds, "tokens_per_s": tokens / seconds,
            "padded_tokens_per_s": padded / seconds, "padding_share": 1 - tokens / padded,
            "peak_memory_mb": peak_memory_mb(torch.device("cpu")),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "optimizer": optimizer_name, "threads": torch.get_num_threads(),
            "batches_digest": digest.hexdigest()}


if __name__ == "__main__":
    steps, warmup, data, model_dir, method, batch, order = sys.argv[1:8]
    print(json.dumps(measure(data, model_dir, method, int(batch), order, int(steps),
                             int(warmup))))
