"""Apply a PEFT plan to a built fairseq RoBERTa, by layer index."""

from .lora import LoRALinear
from .mixout import MixoutLinear
from .prefix import PrefixSelfAttention
from .plan import LoRA, Mixout, Plan, Prefix
from .trainable import MODULE_TARGETS, is_trainable

_TARGET_MODULES = {target: path for path, target in MODULE_TARGETS.items()}


def _get(module, path):
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set(module, path, value):
    parent, _, last = path.rpartition(".")
    setattr(_get(module, parent) if parent else module, last, value)


def add_lora(layer, lora: LoRA):
    for target in lora.targets:
        path = _TARGET_MODULES[target]
        _set(layer, path, LoRALinear.wrap(_get(layer, path), lora.r, lora.alpha, lora.dropout))
    _call_projection_modules(layer, lora.targets)


def add_mixout(layer, mixout: Mixout):
    for target in mixout.targets:
        path = _TARGET_MODULES[target]
        _set(layer, path, MixoutLinear.wrap(_get(layer, path), mixout.p))
    _call_projection_modules(layer, mixout.targets)


def _call_projection_modules(layer, targets):
    if {"q", "k", "v", "out"} & set(targets) and hasattr(layer.self_attn, "skip_embed_dim_check"):
        # (--attention-kernel fairseq) fairseq's MultiheadAttention normally hands
        # q_proj.weight & co. straight to F.multi_head_attention_forward, which would skip a
        # LoRA or mixout layer; this flag makes it use its own implementation that calls the
        # projection modules. The plugin's SDPA attention always calls them.
        layer.self_attn.skip_embed_dim_check = True


def apply_plan(model, plan: Plan, layers) -> None:
    """Add the plan's modules to `layers` (the encoder layers) and freeze what it does not train."""
    if len(layers) != plan.num_layers:
        raise ValueError("the plan is for %d layers, the model has %d"
                         % (plan.num_layers, len(layers)))
    for index, layer in enumerate(layers):
        lora = plan.method(index, LoRA)
        if lora is not None:
            add_lora(layer, lora)
        mixout = plan.method(index, Mixout)
        if mixout is not None:
            add_mixout(layer, mixout)
        prefix = plan.method(index, Prefix)
        if prefix is not None:
            layer.self_attn = PrefixSelfAttention(layer.self_attn, prefix.len, prefix.mlp)
    for name, p in model.named_parameters():
        p.requires_grad = is_trainable(name, plan)
