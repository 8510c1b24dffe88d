"""A tiny RoBERTa with a PEFT plan, built in-process (2 layers, 16 dims, 4 heads, no dropout)."""

import argparse
from types import SimpleNamespace

import torch
from fairseq.data import Dictionary

from ehft_plugin.models.roberta_ehft import RobertaEhftModel, roberta_ehft_base


def tiny_dictionary(size=60):
    d = Dictionary()
    for i in range(size):
        d.add_symbol("w%d" % i)
    d.add_symbol("<mask>")
    return d


def tiny_args(peft="full", layers=2, head_type="fairseq", **extra):
    args = argparse.Namespace(
        encoder_layers=layers, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
        encoder_attention_heads=4, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        pooler_dropout=0.0, max_positions=64, peft=peft, head_type=head_type, **extra)
    roberta_ehft_base(args)
    return args


def tiny_model(peft="full", num_classes=3, seed=0, **kwargs):
    torch.manual_seed(seed)
    task = SimpleNamespace(source_dictionary=tiny_dictionary(), max_positions=lambda: 64)
    model = RobertaEhftModel.build_model(tiny_args(peft, **kwargs), task)
    model.register_classification_head("head", num_classes=num_classes)
    return model


def tiny_batch(seed=0, batch=4, length=12):
    """Token ids with <s> … </s> and right padding of different lengths."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 60, (batch, length), generator=g)
    tokens[:, 0] = 0
    for i in range(batch):
        end = length - i * 2
        tokens[i, end - 1] = 2
        tokens[i, end:] = 1  # padding
    return tokens


def logits(model, tokens):
    return model(tokens, features_only=True, classification_head_name="head")[0]
