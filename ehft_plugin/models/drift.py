"""How far training has moved the backbone: ‖θ − θ_ref‖ over the backbone's parameters.

`--task glue_ehft --log-drift-from CKPT` logs it as `drift` in the training stats at every
update (EH-FT paper Figure 5: FT moves the pretrained weights further than EH-FT stage 2).
Only the backbone counts (`encoder.sentence_encoder.*`): the head starts from nothing in FT
and from stage 1 in EH-FT, so its distance says nothing about forgetting.
"""

import torch

from ..errors import CheckpointError

BACKBONE = "encoder.sentence_encoder."


def _backbone_state(state, path):
    # releases from 2019 name the encoder "decoder.sentence_encoder"; fairseq renames on load
    if not any(k.startswith(BACKBONE) for k in state):
        state = {"encoder." + k[len("decoder."):]: v for k, v in state.items()
                 if k.startswith("decoder.sentence_encoder.")}
    if not state:
        raise CheckpointError("%s holds no RoBERTa encoder weights to measure drift from" % path)
    return state


def reference_parameters(path, model):
    """{parameter name: reference tensor (float32, on the parameter's device)} for every
    backbone parameter of `model` that the checkpoint at `path` holds with the same shape.
    PEFT parameters (LoRA, prefixes) have no reference and are left out."""
    from ..fairseq_compat.safe_loading import safe_load

    state = _backbone_state(safe_load(path, map_location="cpu")["model"], path)
    reference = {}
    for name, param in unwrapped(model).named_parameters():
        ref = state.get(name) if name.startswith(BACKBONE) else None
        if ref is not None and tuple(ref.shape) == tuple(param.shape):
            reference[name] = ref.to(param.device, torch.float32)
    if not reference:
        raise CheckpointError("%s: none of the model's backbone parameters is in it (another "
                              "architecture?)" % path)
    return reference


def unwrapped(model):
    """The model inside fairseq's data-parallel wrappers (their names start with "module.")."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


@torch.no_grad()
def parameter_distance(model, reference):
    """‖θ − θ_ref‖ (L2, float32) over the parameters named in `reference`."""
    squares = [(param.float() - reference[name]).pow(2).sum()
               for name, param in unwrapped(model).named_parameters() if name in reference]
    return float(torch.stack(squares).sum().sqrt())
