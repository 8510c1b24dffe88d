"""Small files from finetuned checkpoints, as pure functions on state dicts.

- `extract(model_state, plan)`: the parameters the plan trains (the trainability predicate
  that froze and counted them), classification heads included; the backbone is left out.
- `save_adapter` / `load_adapter`: those tensors as safetensors with the plan in its
  metadata (safetensors holds tensors only: nothing in the file can run code).
- `merged_state(model_state)`: LoRA folded into the weights and LoRA keys dropped, so a
  stock fairseq RoBERTa loads it.
"""

import os

from ..atomic import atomic_file
from ..errors import CheckpointError
from .plan import LoRA, format_plan, parse_plan
from .trainable import is_trainable, layer_index

ADAPTER_FORMAT = "ehft-adapter/1"


def load_checkpoint(path):
    """A fairseq checkpoint as fairseq reads it (safely), or a CheckpointError naming it."""
    import ehft_plugin
    from fairseq import checkpoint_utils

    ehft_plugin.register()  # safe loading (the `ehft` command registers on demand)

    if not os.path.isfile(path):
        raise CheckpointError("--checkpoint %s: file not found" % path)
    try:
        return checkpoint_utils.load_checkpoint_to_cpu(path)
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError("--checkpoint %s: cannot be read (%s)" % (path, e)) from None


def read_saved(path, name="%s"):
    """A checkpoint's state as saved (not fairseq's upgraded view of it), read safely and
    without importing fairseq; `name` % path names it in errors ("--checkpoint %s")."""
    from ..fairseq_compat.safe_loading import safe_load

    if not os.path.isfile(path):
        raise CheckpointError("%s: file not found" % (name % path))
    try:
        return safe_load(path, map_location="cpu")
    except CheckpointError:
        raise
    except Exception as e:  # a truncated file fails inside torch's zip reader
        raise CheckpointError("%s: cannot be read (%s)" % (name % path, e)) from None


def extract(model_state, plan):
    return {name: t for name, t in model_state.items() if is_trainable(name, plan)}


def save_tensors(tensors, path, metadata):
    """Tensors as safetensors (written atomically), with string metadata."""
    from safetensors.torch import save_file

    with atomic_file(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata)


def load_tensors(path, expected_format):
    """(tensors, metadata); a file that is not of `expected_format` is a CheckpointError."""
    from safetensors import safe_open

    if not os.path.isfile(path):
        raise CheckpointError("%s: file not found" % path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError("%s: not a readable safetensors file (%s)" % (path, e)) from None
    if metadata.get("format") != expected_format:
        raise CheckpointError("%s: not an %s file (format %r)"
                              % (path, expected_format, metadata.get("format")))
    return tensors, metadata


def save_adapter(tensors, path, plan, extra=None):
    save_tensors(tensors, path, {"format": ADAPTER_FORMAT, "peft": format_plan(plan),
                                 "num_layers": str(plan.num_layers), **(extra or {})})


def load_adapter(path):
    """(tensors, plan, metadata)."""
    tensors, metadata = load_tensors(path, ADAPTER_FORMAT)
    return tensors, parse_plan(metadata["peft"], int(metadata["num_layers"])), metadata


def merged_state(model_state, plan):
    """W + (alpha/r) B A for every LoRA layer, mixout's start values dropped; the result has
    stock RoBERTa keys only."""
    leftover = [k for k in model_state if ".prefix." in k]
    if leftover:
        raise CheckpointError("prefix-tuning parameters cannot be merged into the weights "
                              "(first: %s); only LoRA, BitFit and full layers export to stock "
                              "fairseq" % leftover[0])
    # mixout's start values are a training device, not part of the model
    merged = {k: v for k, v in model_state.items() if not k.endswith(".mixout_target")}
    for key in [k for k in model_state if k.endswith(".lora_A")]:
        base = key[: -len(".lora_A")]
        lora = plan.method(layer_index(key), LoRA)
        a, b, weight = model_state[key], model_state[base + ".lora_B"], model_state[base + ".weight"]
        delta = (b.float() @ a.float()) * (lora.alpha / lora.r)
        merged[base + ".weight"] = (weight.float() + delta).to(weight.dtype)
        del merged[key], merged[base + ".lora_B"]
    return merged


_STOCK_ARCH = {"roberta_ehft_base": "roberta_base", "roberta_ehft_large": "roberta_large"}


def stock_checkpoint(state, num_classes, regression=False):
    """A checkpoint stock fairseq loads without this plugin, for `--task sentence_prediction`.

    `state` is a plugin checkpoint as `fairseq.checkpoint_utils.load_checkpoint_to_cpu`
    returns it. The configuration is written as plain containers (no argparse.Namespace),
    so even a fairseq whose torch.load refuses pickled classes can read the file.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)
    model = vars(cfg["model"]).copy() if not isinstance(cfg["model"], dict) else dict(cfg["model"])
    plan = parse_plan(model["peft"], model["encoder_layers"])
    head_name = cfg["task"]["classification_head_name"]
    task_head = head_name
    if model.get("head_type") == "ehft":
        model["pooler_activation_fn"] = "relu"  # stock heads take their activation from here
        # stock sentence_prediction registers its head with inner dim = hidden size before
        # loading, and a checkpoint head of another size would be swapped for a random one;
        # under another name, from_pretrained registers the saved head with its real size
        task_head = "_" + head_name + "_of_the_task"
    arch = _STOCK_ARCH.get(model.get("arch"), model.get("arch"))
    # the saved heads are the point of the export: register them from the checkpoint
    model.update(arch=arch, _name=arch, load_checkpoint_heads=True, user_dir=None,
                 task="sentence_prediction", criterion="sentence_prediction")
    cfg["common"]["user_dir"] = None  # nothing of this plugin is needed to load the export
    for key in ("peft", "head_type", "head_inner_dim", "reset_classification_heads"):
        model.pop(key, None)
    task = cfg["task"]
    cfg["task"] = {
        "_name": "sentence_prediction", "data": task["data"], "num_classes": num_classes,
        "init_token": 0, "separator_token": 2, "regression_target": regression,
        "max_positions": task["max_positions"], "shorten_method": task["shorten_method"],
        "classification_head_name": task_head,
    }
    cfg["model"], cfg["criterion"] = model, {"_name": "sentence_prediction",
                                             "regression_target": regression}
    return {"cfg": cfg, "args": None, "model": merged_state(state["model"], plan),
            "optimizer_history": [{"criterion_name": "SentencePredictionCriterion",
                                   "optimizer_name": "exported", "lr_scheduler_state": {},
                                   "num_updates": 0}],
            "extra_state": {}, "last_optimizer_state": None}
