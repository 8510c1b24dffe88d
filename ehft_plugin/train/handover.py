"""EH-FT stage hand-over as pure functions on state dicts (EH-FT paper §2.2).

Stage 1 trains a PEFT method and the head; then the backbone changes are thrown away and
stage 2 starts from the original pretrained weights, bit for bit, plus stage 1's head
(weights and biases). `extract_head` takes the head out of a stage-1 model state;
`graft_head` puts it onto the original model state. Nothing else crosses over, except in
the -reserve variants (paper Table 3): `extract_peft` takes what the stage-1 plan trained
besides the head, and `graft_params` lays it over the original state.

The files of the hand-over live here too: stage1/head.safetensors (and peft.safetensors)
that `write_handover` takes from stage 1's last checkpoint, and the start checkpoint of a
stage that `write_stage_start` builds from them (`ehft train`) or `start_from_stage1` builds
from stage 1's checkpoint directly (`ehft handover`).
"""

import os

from ..atomic import atomic_file
from ..errors import CheckpointError
from ..peft.checkpoints import (load_adapter, load_tensors, read_saved, save_adapter,
                                save_tensors)
from ..peft.trainable import is_trainable
from .rundir import HEAD_FILE, LAST_CHECKPOINT, PEFT_FILE

HEADS = "classification_heads."
HEAD_FORMAT = "ehft-head/1"
HEAD_NAME = "sentence_classification_head"


def extract_head(model_state, head_name):
    """{key: tensor} of head `head_name`, keys as in the model state."""
    prefix = HEADS + head_name + "."
    head = {k: v for k, v in model_state.items() if k.startswith(prefix)}
    if not head:
        found = sorted({k[len(HEADS):].split(".")[0] for k in model_state if k.startswith(HEADS)})
        raise CheckpointError("no classification head %r in the stage-1 checkpoint (heads: %s)"
                              % (head_name, ", ".join(found) or "none"))
    return head


def strip_heads(model_state):
    """The model state without classification heads: a new head is built on top of it."""
    return {k: v for k, v in model_state.items() if not k.startswith(HEADS)}


def graft_head(original_state, head):
    """The original model state with every head removed and `head` added.

    The backbone tensors are the original objects, untouched: stage 2 starts from exactly
    the pretrained weights, including the biases BitFit changed in stage 1.
    """
    if not head or not all(k.startswith(HEADS) for k in head):
        raise CheckpointError("the head to graft must hold classification_heads.* tensors only")
    # releases from 2019 name the encoder "decoder.sentence_encoder"; fairseq renames on load
    if not any(".sentence_encoder." in k for k in original_state):
        raise CheckpointError("the original checkpoint holds no RoBERTa encoder weights")
    grafted = strip_heads(original_state)
    grafted.update(head)
    return grafted


def extract_peft(model_state, plan):
    """{key: tensor} of the backbone parameters `plan` trains (BitFit biases, LoRA, prefixes,
    full layers), heads left out."""
    return {k: v for k, v in model_state.items()
            if not k.startswith(HEADS) and is_trainable(k, plan)}


def graft_params(model_state, params):
    """`model_state` with `params` replacing or adding entries. Keys come from a fairseq model
    of today ("encoder.sentence_encoder."); an original from 2019 names the encoder
    "decoder.sentence_encoder." and gets them under its own names, so that fairseq's rename on
    load sees one consistent set."""
    old_names = any(k.startswith("decoder.sentence_encoder.") for k in model_state)
    grafted = dict(model_state)
    for key, value in params.items():
        if old_names and key.startswith("encoder.sentence_encoder."):
            key = "decoder." + key[len("encoder."):]
        if key in grafted and grafted[key].shape != value.shape:
            raise CheckpointError("cannot carry %s over: shape %s in stage 1, %s in the original"
                                  % (key, tuple(value.shape), tuple(grafted[key].shape)))
        grafted[key] = value
    return grafted


def start_from_stage1(original, stage1, head_name=HEAD_NAME, reserve_plan=None):
    """The original checkpoint state with stage 1's head (`stage1`: its checkpoint state) and,
    with `reserve_plan`, what that plan trained in the backbone."""
    start = dict(original)  # the caller's state may be shared by every stage and seed
    start["model"] = graft_head(original["model"], extract_head(stage1["model"], head_name))
    if reserve_plan is not None:
        start["model"] = graft_params(start["model"], extract_peft(stage1["model"], reserve_plan))
    return start


def write_handover(stage1_dir, head_name=HEAD_NAME, reserve_plan=None, checkpoint=None):
    """stage 1's head -> stage1/head.safetensors (small: the head only), from `checkpoint`
    (default: stage 1's checkpoint_last.pt; checkpoint_best.pt hands over its best head);
    with `reserve_plan` (the stage-1 plan of a -reserve variant) also what that plan trained
    in the backbone -> stage1/peft.safetensors."""
    # as saved: the stage's own fairseq-train wrote it, there is nothing to upgrade, and the
    # launcher does not import fairseq
    state = read_saved(checkpoint or os.path.join(stage1_dir, LAST_CHECKPOINT))
    path = os.path.join(stage1_dir, HEAD_FILE)
    save_tensors(extract_head(state["model"], head_name), path,
                 {"format": HEAD_FORMAT, "head_name": head_name})
    if reserve_plan is not None:
        save_adapter(extract_peft(state["model"], reserve_plan),
                     os.path.join(stage1_dir, PEFT_FILE), reserve_plan)
    return path


def load_head(path):
    """The head tensors of a stage1/head.safetensors."""
    return load_tensors(path, HEAD_FORMAT)[0]


def write_stage_start(original, original_path, head_path, out_path, peft_path=None, write=True):
    """The checkpoint a stage starts from: the original backbone (`original`, the state read
    from `original_path`) with stage 1's head grafted on (`head_path`), or with no head at all
    so that a new one is built; `peft_path` (-reserve variants) lays stage 1's PEFT
    parameters over it. When the original holds no head and nothing is grafted, its file is
    used as it is (no copy). `write=False` only says where the start is (the ranks other
    than 0 under torchrun, and dry runs)."""
    import torch

    heads = any(k.startswith(HEADS) for k in original["model"])
    if not head_path and not heads:
        return os.path.abspath(original_path)
    if not write:
        return out_path
    state = dict(original)
    if head_path:
        state["model"] = graft_head(original["model"], load_head(head_path))
        if peft_path:
            state["model"] = graft_params(state["model"], load_adapter(peft_path)[0])
    else:
        state["model"] = strip_heads(original["model"])
    with atomic_file(out_path) as tmp:
        torch.save(state, tmp)
    return out_path
