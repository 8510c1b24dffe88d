"""A training step that reads device values on the host once, not a dozen times.

Every read of a GPU tensor's value on the host (`.item()`, `bool(t)`, `float(t)`, a
comparison in an `if`) waits for every kernel queued before it, so the host cannot run ahead
of the GPU. fairseq's Trainer does this several times per update
(benchmarks/step_ops.py counts them):

- `_reduce_and_log_stats` tests `torch.isfinite(grad_norm)` and then derives every logged
  value (`agg.get_smoothed_values()`: the loss rounded with `.item()`, the accuracy from the
  confusion counts) for a dictionary that fairseq-train only tests for None; the values are
  read again where they are used, at --log-interval. `reduce_and_log_stats` derives them
  when the dictionary is first read, and skips the finiteness test where the Trainer has
  already made it (it raises on a non-finite norm unless --amp).
- `FP16Optimizer.clip_grad_norm` compares the norm with the clipping threshold and the loss
  scaler compares it with inf and with itself: three reads. `fp16_clip_grad_norm` copies the
  norm to the host once and hands the host copy to the scaler and back to the Trainer, whose
  own `isfinite(grad_norm)` test then reads no device. The arithmetic is fairseq's, on the
  same tensors in the same dtype.
"""

import collections.abc
import logging

import torch
from fairseq.logging import metrics

# what fairseq's _reduce_and_log_stats leaves out of the dictionary it returns
_DROPPED = ("ppl", "wps", "wpb", "bsz")


class SmoothedValues(collections.abc.MutableMapping):
    """`agg.get_smoothed_values()` (plus sample_size), derived when first read."""

    def __init__(self, agg, sample_size):
        self._agg, self._sample_size, self._values = agg, sample_size, None

    def _derived(self):
        if self._values is None:
            values = self._agg.get_smoothed_values()
            values["sample_size"] = self._sample_size
            for key in _DROPPED:
                values.pop(key, None)
            self._values = values
        return self._values

    def __getitem__(self, key):
        return self._derived()[key]

    def __setitem__(self, key, value):
        self._derived()[key] = value

    def __delitem__(self, key):
        del self._derived()[key]

    def __iter__(self):
        return iter(self._derived())

    def __len__(self):
        return len(self._derived())

    def __repr__(self):
        return repr(self._derived())


def wrap_reduce_and_log_stats(original):
    """fairseq's Trainer._reduce_and_log_stats without its host reads (see above)."""

    def reduce_and_log_stats(self, logging_outputs, sample_size, grad_norm=None):
        if self.tpu:  # fairseq's XLA path already avoids the reads
            return original(self, logging_outputs, sample_size, grad_norm)
        # the Trainer raised on a non-finite norm before calling this, except under --amp
        finite = grad_norm is not None and (
            not torch.is_tensor(grad_norm) or not self.cfg.common.amp
            or bool(torch.isfinite(grad_norm)))
        if finite:
            metrics.log_speed("ups", 1.0, priority=100, round=2)
            metrics.log_scalar("gnorm", grad_norm, priority=400, round=3)
            if self.cfg.optimization.clip_norm > 0:
                clipped = torch.where(grad_norm > self.cfg.optimization.clip_norm,
                                      grad_norm.new_tensor(100), grad_norm.new_tensor(0))
                metrics.log_scalar("clip", clipped, priority=500, round=1)
        with metrics.aggregate() as agg:
            if logging_outputs is not None:
                self.task.reduce_metrics(logging_outputs, self.get_criterion())
                del logging_outputs
            if "loss" not in agg:  # as fairseq: a criterion that logs no loss gets -1
                if "loss" not in self._warn_once:
                    self._warn_once.add("loss")
                    logging.getLogger("fairseq.trainer").warning(
                        "Criterion.reduce_metrics did not log a 'loss' value, which may "
                        "break some functionality")
                metrics.log_scalar("loss", -1)
        return SmoothedValues(agg, sample_size)

    reduce_and_log_stats.original = original  # (tests compare the two)
    return reduce_and_log_stats


def wrap_fp16_clip_grad_norm(original):
    """FP16Optimizer.clip_grad_norm with one host read of the norm (see above)."""

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        if self.scaler is None:  # fairseq's branch without a loss scaler reads nothing
            return original(self, max_norm, aggregate_norm_fn)
        self._sync_fp16_grads_to_fp32()
        grad_norm = self._multiply_factor * self.fp32_optimizer.clip_grad_norm(
            0, aggregate_norm_fn)
        if torch.is_tensor(self._multiply_factor):
            self._multiply_factor = self._multiply_factor.to(grad_norm.device)
        on_host = grad_norm.detach().cpu()  # the one read
        if on_host > max_norm > 0.0:
            self._multiply_factor *= max_norm / grad_norm
        self.scaler.check_overflow(on_host)
        return on_host

    clip_grad_norm.original = original
    return clip_grad_norm
