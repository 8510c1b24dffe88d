"""EH-FT stage hand-over as pure functions on state dicts (EH-FT paper §2.2).

Stage 1 trains a PEFT method and the head; then the backbone changes are thrown away and
stage 2 starts from the original pretrained weights, bit for bit, plus stage 1's head
(weights and biases). `extract_head` takes the head out of a stage-1 model state;
`graft_head` puts it onto the original model state. Nothing else crosses over, except in
the -reserve variants (paper Table 3): `extract_peft` takes what the stage-1 plan trained
besides the head, and `graft_params` lays it over the original state.
"""

from .errors import CheckpointError
from .peft.trainable import is_trainable

HEADS = "classification_heads."


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
