"""Which parameters train: one pure predicate over parameter names, used to freeze, count
and (later) save. Names are those of fairseq's RoBERTa:
`encoder.sentence_encoder.layers.<i>.self_attn.q_proj.bias`, `classification_heads.<name>.…`.
"""

import re
from collections import OrderedDict

from .plan import BitFit, Full, LoRA, Mixout, Plan, Prefix

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")
_EMBEDDINGS = ("embed_tokens.", "embed_positions.", "layernorm_embedding.")
# sub-module of an encoder layer -> target name used in plans
MODULE_TARGETS = {
    "self_attn.q_proj": "q", "self_attn.k_proj": "k", "self_attn.v_proj": "v",
    "self_attn.out_proj": "out", "fc1": "fc1", "fc2": "fc2",
    "self_attn_layer_norm": "attn_ln", "final_layer_norm": "ffn_ln",
}


def _split(name):
    """(layer index or None, module path inside the layer, parameter name)."""
    match = _LAYER.search(name)
    if not match:
        return None, None, name.rsplit(".", 1)[-1]
    module, _, param = match.group(2).rpartition(".")
    return int(match.group(1)), module, param


def layer_index(name: str):
    """The encoder layer a parameter belongs to, or None."""
    return _split(name)[0]


def is_trainable(name: str, plan: Plan) -> bool:
    if name.endswith(".mixout_target"):  # a buffer: mixout's start values, never trained
        return False
    if name.startswith("classification_heads.") or ".classification_heads." in name:
        return True
    layer, module, param = _split(name)
    if layer is None:
        embedding = any(e in name for e in _EMBEDDINGS) and "lm_head" not in name
        return embedding and plan.train_embeddings
    methods = plan.methods_for_layer(layer)
    if any(isinstance(m, (Full, Mixout)) for m in methods):
        return True
    target = MODULE_TARGETS.get(module)
    for m in methods:
        if isinstance(m, BitFit) and param == "bias" and target in m.targets:
            return True
        if isinstance(m, LoRA) and param in ("lora_A", "lora_B") and target in m.targets:
            return True
        if isinstance(m, Prefix) and module.startswith("self_attn.prefix"):
            return True
    return False


def category(name: str) -> str:
    """A coarse kind of parameter, for the start-up report."""
    if "classification_heads." in name:
        return "head"
    if "lm_head." in name:
        return "lm_head"
    if "lora_" in name:
        return "lora"
    if ".prefix" in name:
        return "prefix"
    layer, module, param = _split(name)
    if layer is None:
        return "embeddings"
    if module.endswith("layer_norm"):
        return "layer_norm"
    kind = "attention" if module.startswith("self_attn") else "feed_forward"
    return kind + (" bias" if param == "bias" else " weight")


def count_parameters(model) -> "OrderedDict[str, tuple]":
    """{category: (trainable, total)} over the model's (deduplicated) parameters."""
    counts = OrderedDict()
    for name, p in model.named_parameters():
        trainable, total = counts.get(category(name), (0, 0))
        counts[category(name)] = (trainable + p.numel() * p.requires_grad, total + p.numel())
    return counts


def format_counts(counts) -> str:
    trainable = sum(t for t, _ in counts.values())
    total = sum(n for _, n in counts.values())
    lines = ["trainable parameters: %s of %s (%.4f%%)" % (f"{trainable:,}", f"{total:,}",
                                                          100.0 * trainable / max(total, 1))]
    for name, (t, n) in counts.items():
        lines.append("  %-20s %14s of %14s" % (name, f"{t:,}", f"{n:,}"))
    return "\n".join(lines)
