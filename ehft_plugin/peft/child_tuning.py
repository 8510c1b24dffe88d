"""Child-Tuning_D (Xu et al., EMNLP 2021): before training, the Fisher information of every
encoder-layer parameter, estimated on the training set, chooses a child network, the share
p_D of those parameters with the *highest* Fisher information; training then updates only the
child (gradients outside it are zeroed). Xu et al. choose the highest; the EH-FT paper's text
says "lowest": this follows Xu et al.

As in their code: the Fisher information of a parameter is the mean over the training batches
of its squared gradient of the batch's mean loss, computed once with the pretrained backbone
and a new head, in training mode (dropout on); one threshold over all encoder-layer
parameters together; embeddings and the head are not masked; AdamW's decoupled weight decay
still shrinks every weight (their ChildTuningAdamW decays all of them too), so outside the
child a weight only ever changes by that factor.

The mask is a file (`ehft child-mask`, or `ehft train` before the stage: train/child_mask.py
computes it on a model rebuilt from the stage's command), read by
`--child-tuning-mask FILE` (roberta_ehft), which zeroes the gradients outside the child with
hooks on the parameters: it works with any optimizer, fp16 wrapper and DistributedDataParallel.
"""

import torch
import torch.nn as nn

from ..errors import CheckpointError, EhftError

MASK_FORMAT = "ehft-child-mask/1"
LAYERS = ".sentence_encoder.layers."


class ChildTuningError(EhftError):
    """A share out of range, or a mask that does not fit the model."""


def check_share(share):
    if not 0 < share <= 1:
        raise ChildTuningError("child-tuning share p=%s: expected 0 < p <= 1" % share)
    return share


def fisher_information(model, criterion, batches, clip=0.0):
    """{parameter name: mean over `batches` of the squared gradient of the batch's mean loss}
    for every trainable encoder-layer parameter; the model is left in training mode. `clip` >
    0: each tensor's gradient is first clipped to that norm on its own (the EH-FT authors'
    Child-Tuning_D, clip_grad_norm_ per parameter)."""
    params = {n: p for n, p in model.named_parameters() if LAYERS in n and p.requires_grad}
    if not params:
        raise ChildTuningError("the model has no trainable encoder-layer parameters to choose "
                               "a child from (is --peft freezing them?)")
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    model.train()
    count = 0
    for sample in batches:
        model.zero_grad(set_to_none=True)
        loss, sample_size, _ = criterion(model, sample)
        (loss / sample_size).backward()
        for name, p in params.items():
            if p.grad is not None:
                if clip > 0:
                    torch.nn.utils.clip_grad_norm_(p, clip)
                fisher[name] += p.grad.float() ** 2
        count += 1
    model.zero_grad(set_to_none=True)
    if not count:
        raise ChildTuningError("no training batches to estimate the Fisher information on")
    return {n: f / count for n, f in fisher.items()}


def choose_child(fisher, share):
    """{name: bool mask}: exactly round(share × all entries) entries, those of highest Fisher
    information over all tensors together (ties broken by position)."""
    check_share(share)
    names = list(fisher)
    flat = torch.cat([fisher[n].flatten() for n in names])
    k = max(1, int(round(share * flat.numel())))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool)
    chosen[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = {}, 0
    for name in names:
        size = fisher[name].numel()
        masks[name] = chosen[start:start + size].view(fisher[name].shape)
        start += size
    return masks


def save_mask(masks, path, share, examples):
    from .checkpoints import save_tensors

    save_tensors({n: m.to(torch.uint8) for n, m in masks.items()}, path,
                 {"format": MASK_FORMAT, "share": repr(share), "examples": str(examples)})


def load_mask(path):
    """(masks as bool tensors, metadata)."""
    from .checkpoints import load_tensors

    tensors, metadata = load_tensors(path, MASK_FORMAT)
    return {n: t.bool() for n, t in tensors.items()}, metadata


class ChildMask(nn.Module):
    """The masks as buffers (they move with the model; not saved in its checkpoints)."""

    def __init__(self, masks):
        super().__init__()
        self.names = list(masks)
        for i, name in enumerate(self.names):
            self.register_buffer("mask%d" % i, masks[name], persistent=False)

    def mask(self, name):
        return getattr(self, "mask%d" % self.names.index(name))


def apply_mask(model, masks, source):
    """Zero the gradients outside the child from now on (hooks on the parameters); the masks
    must name parameters of `model` with their shapes (`source`: the file, for errors)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise CheckpointError("%s: a mask for %s, which this model does not have (a mask "
                                  "of another model?)" % (source, name))
        if tuple(mask.shape) != tuple(params[name].shape):
            raise CheckpointError("%s: the mask of %s has shape %s, the parameter %s"
                                  % (source, name, tuple(mask.shape),
                                     tuple(params[name].shape)))
    model.child_mask = ChildMask(masks)
    holder = model.child_mask
    for name in masks:
        params[name].register_hook(
            lambda grad, name=name: grad * holder.mask(name).to(grad.dtype))
