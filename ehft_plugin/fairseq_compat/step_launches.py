"""Fewer kernel launches per update in fairseq's mixed-precision optimizer and gradient norm.

On a GPU each operation is a kernel launch of a few microseconds of host time, and at
RTE-sized batches the launches, not the arithmetic, set the step time
(benchmarks/step_ops.py counts them). fairseq's `FP16Optimizer` works tensor by tensor:

- it copies every fp16 gradient into the fp32 master gradients, and every fp32 parameter
  back into the fp16 model, one `copy_` per tensor (about 390 each for RoBERTa-large);
  `sync_grads_to_fp32` and `sync_params_to_fp16` make each one `torch._foreach_copy_` on
  views of the flat buffer, built once;
- it zeroes the flat fp32 gradient buffer on every `zero_grad`, though the next copy
  overwrites all of it: `zero_grad` leaves it, and the copy zeroes it only when no backward
  came in between (then fairseq's copy would have found it zeroed);
- without apex, `fairseq.utils.clip_grad_norm_` takes one norm per tensor (the bf16 path,
  which keeps no flat buffer): `clip_grad_norm_` takes them with one `torch._foreach_norm`.

Values are fairseq's: the same copies and norms, batched.
"""

import torch

_VIEWS = "_ehft_flat_views"  # cached on the optimizer: (key, fp16 params, fp32 views)


def _flat_views(optimizer, device, attribute):
    """(fp16 params, views of the flat fp32 `attribute` ("grad" or "data")) on `device`, in
    fairseq's order and offsets; built once per buffer."""
    flat = optimizer.fp32_params[device]
    buffer = flat.grad if attribute == "grad" else flat.data
    cache = optimizer.__dict__.setdefault(_VIEWS, {})
    key = (device, attribute)
    if key not in cache or cache[key][0] is not buffer:
        params = [p for p in optimizer.fp16_params if p.device.index == device]
        views, offset = [], 0
        for p in params:
            views.append(buffer[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        cache[key] = (buffer, params, views)
    return cache[key][1], cache[key][2]


def wrap_sync_grads(original):
    def sync_fp16_grads_to_fp32(self):
        if not self.has_flat_params or not self._needs_sync:
            if self.has_flat_params and self.__dict__.pop("_ehft_grads_stale", False):
                for flat in self.fp32_params.values():  # no backward since zero_grad
                    flat.grad.zero_()
            return original(self)
        for device in self.fp32_params:
            params, views = _flat_views(self, device, "grad")
            copy = [(v, p.grad) for v, p in zip(views, params)
                    if p.requires_grad and p.grad is not None]
            zero = [v for v, p in zip(views, params) if not p.requires_grad or p.grad is None]
            if copy:
                torch._foreach_copy_([v for v, _ in copy], [g for _, g in copy])
            if zero:
                torch._foreach_zero_(zero)
        self.__dict__.pop("_ehft_grads_stale", None)
        self._needs_sync = False

    sync_fp16_grads_to_fp32.original = original
    return sync_fp16_grads_to_fp32


def wrap_sync_params(original):
    def sync_fp32_params_to_fp16(self):
        if not self.has_flat_params:
            trained = [(p, p32) for p, p32 in zip(self.fp16_params, self.fp32_params)
                       if p.requires_grad]
            if trained:
                torch._foreach_copy_([p.data for p, _ in trained],
                                     [p32.data for _, p32 in trained])
            return None
        for device in self.fp32_params:
            params, views = _flat_views(self, device, "data")
            torch._foreach_copy_([p.data for p in params], views)
        return None

    sync_fp32_params_to_fp16.original = original
    return sync_fp32_params_to_fp16


def wrap_zero_grad(original):
    def zero_grad(self):
        if not self.has_flat_params:
            return original(self)
        for p in self.fp16_params:
            p.grad = None
        # the next copy overwrites the whole flat buffer; zeroed there if no backward comes
        self._ehft_grads_stale = True
        self._needs_sync = False
        if self.scaler is not None:
            self._multiply_factor = 1.0 / float(self.scaler.loss_scale)
        return None

    zero_grad.original = original
    return zero_grad


def wrap_clip_grad_norm_(original):
    def clip_grad_norm_(params, max_norm, aggregate_norm_fn=None):
        from fairseq import utils

        if isinstance(params, torch.Tensor):
            params = [params]
        params = list(params)
        grads = [p.grad.detach() for p in params
                 if p is not None and getattr(p, "grad", None) is not None]
        if len(grads) < 2 or utils.multi_tensor_l2norm_available or any(
                hasattr(p, "expert") for p in params) or grads[0].device.type == "xla":
            return original(params, max_norm, aggregate_norm_fn)
        norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
        total_norm = torch.norm(torch.stack(norms))
        if aggregate_norm_fn is not None:
            total_norm = aggregate_norm_fn(total_norm)
        if max_norm > 0:
            clip_coef = (float(max_norm) / (total_norm + 1e-6)).clamp_(max=1)
            torch._foreach_mul_(grads, clip_coef)
        return total_norm

    clip_grad_norm_.original = original
    return clip_grad_norm_
