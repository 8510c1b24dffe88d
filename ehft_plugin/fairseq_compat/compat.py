"""Every change the plugin makes to fairseq, in one place, installed when the plugin is
imported (fairseq's --user-dir, `import ehft_plugin`).

One function per patched name. Each checks that the name still exists in the installed
fairseq and stops the import with a message naming that fairseq's version if it does not, so
a fairseq that moved something fails at once instead of training without the fix. Installing
twice wraps nothing twice. The behaviour lives beside what it serves (safe_loading.py,
distributed.py, replicas.py); only the installation is here.

    fairseq.checkpoint_utils.torch                      safe_loading: weights_only loading
    fairseq.distributed.utils.call_main                 preflight: flag checks; distributed:
                                                        one world under torchrun
    fairseq.distributed.utils.all_gather_list           distributed: gloo gathers on CPU
    fairseq.models.distributed_fairseq_model.DistributedFairseqModel
                                                        distributed: DDP on CPU
    fairseq.trainer.Trainer.begin_valid_epoch           replicas: ranks compare parameters
    fairseq.file_io.PathManager.copy                    atomic: checkpoint copies all or nothing
    fairseq.checkpoint_utils.torch_persistent_save,
    ._torch_persistent_save                             atomic: a full disk said in one line,
                                                        the partial checkpoint removed
    fairseq.trainer.Trainer._reduce_and_log_stats       host_syncs: logged values derived
                                                        when read, not every update
    fairseq.optim.fp16_optimizer._FP16OptimizerMixin.clip_grad_norm
                                                        host_syncs: the norm read once
    fairseq.optim.fp16_optimizer._FP16OptimizerMixin._sync_fp16_grads_to_fp32,
    ._sync_fp32_params_to_fp16, .zero_grad              step_launches: foreach copies, no
                                                        zeroing of an overwritten buffer
    fairseq.utils.clip_grad_norm_                       step_launches: one foreach norm
    fairseq.logging.progress_bar.TensorboardProgressBarWrapper._log_to_tensorboard,
    .WandBProgressBarWrapper._log_to_wandb              step_offset: stage 2's steps continue
                                                        stage 1's
    fairseq.logging.progress_bar.progress_bar           log_file: --log-file's handler added
                                                        once, not once per epoch
"""

import importlib
import logging

logger = logging.getLogger(__name__)

WRAPPED = "ehft_wrapped"  # set on every wrapper: installing again leaves it as it is


class FairseqMismatch(ImportError):
    """The installed fairseq lacks a name the plugin patches."""


def _fairseq_version():
    try:
        import fairseq

        return getattr(fairseq, "__version__", "of unknown version")
    except ImportError:
        return "(not importable)"


def _owner(module_name, attribute):
    """(the object holding `attribute`, its current value); the module path may end in a
    class name (fairseq.trainer.Trainer)."""
    path = module_name.split(".")
    for cut in range(len(path), 0, -1):
        try:
            owner = importlib.import_module(".".join(path[:cut]))
        except ImportError:
            continue
        try:
            for name in path[cut:]:
                owner = getattr(owner, name)
            return owner, getattr(owner, attribute)
        except AttributeError:
            break
    raise FairseqMismatch("ehft_plugin patches %s.%s, which fairseq %s does not have; this "
                          "plugin supports fairseq 0.12 (fairseq-fixed 0.12.3.1)"
                          % (module_name, attribute, _fairseq_version()))


def _wrap(module_name, attribute, make):
    owner, current = _owner(module_name, attribute)
    if not getattr(current, WRAPPED, False):
        setattr(owner, attribute, make(current))
    return getattr(owner, attribute)


def patch_checkpoint_loading():
    """fairseq.checkpoint_utils.torch: torch.load with an allow-list (torch >= 2.6)."""
    import torch

    from . import safe_loading

    if not hasattr(torch.serialization, "safe_globals"):
        logger.warning("torch %s has no safe_globals: fairseq checkpoints load as fairseq "
                       "loads them", torch.__version__)
        return
    _wrap("fairseq.checkpoint_utils", "torch", lambda _: safe_loading.TorchWithSafeLoad())


def patch_call_main():
    """The configuration checked (preflight) and torchrun's world joined (distributed) before
    fairseq-train starts anything; a user's error raised anywhere in the run ends it in one
    line (errors.one_line_errors)."""
    from . import distributed, preflight
    from ..errors import one_line_errors

    def wrap(original):
        @one_line_errors
        def call_main(cfg, main, **kwargs):
            preflight.check(cfg)
            distributed.join_torchrun_world(cfg)
            return original(cfg, main, **kwargs)
        setattr(call_main, WRAPPED, True)
        return call_main

    _wrap("fairseq.distributed.utils", "call_main", wrap)


def patch_all_gather_list():
    from . import distributed

    _wrap("fairseq.distributed.utils", "all_gather_list", distributed.wrap_all_gather_list)


def patch_distributed_model():
    """The class is also re-exported by fairseq.models, whose name the Trainer uses."""
    import fairseq.models

    from . import distributed

    wrapped = _wrap("fairseq.models.distributed_fairseq_model", "DistributedFairseqModel",
                    distributed.wrap_distributed_model)
    _owner("fairseq.models", "DistributedFairseqModel")
    fairseq.models.DistributedFairseqModel = wrapped


def patch_begin_valid_epoch():
    from . import replicas

    _wrap("fairseq.trainer.Trainer", "begin_valid_epoch", replicas.wrap_begin_valid_epoch)


def patch_checkpoint_copy():
    """checkpoint_last.pt copied from checkpoint_best.pt through a temporary file: a kill
    mid-copy must not leave a checkpoint that a relaunch cannot load."""
    from .. import atomic

    _wrap("fairseq.file_io.PathManager", "copy", atomic.wrap_copy)


def patch_checkpoint_save():
    """A checkpoint save that finds the disk full removes its partial file and says so in
    one line, instead of retrying twice and ending in torch's zip-writer error."""
    from .. import atomic

    _wrap("fairseq.checkpoint_utils", "_torch_persistent_save",
          lambda original: _marked(atomic.wrap_torch_save(original)))
    _wrap("fairseq.checkpoint_utils", "torch_persistent_save",
          lambda original: _marked(atomic.wrap_persistent_save(original)))


def patch_reduce_and_log_stats():
    from . import host_syncs

    _wrap("fairseq.trainer.Trainer", "_reduce_and_log_stats",
          lambda original: _marked(host_syncs.wrap_reduce_and_log_stats(original)))


def patch_fp16_clip_grad_norm():
    from . import host_syncs

    _wrap("fairseq.optim.fp16_optimizer._FP16OptimizerMixin", "clip_grad_norm",
          lambda original: _marked(host_syncs.wrap_fp16_clip_grad_norm(original)))


def patch_fp16_copies():
    from . import step_launches

    owner = "fairseq.optim.fp16_optimizer._FP16OptimizerMixin"
    for attribute, wrap in (("_sync_fp16_grads_to_fp32", step_launches.wrap_sync_grads),
                            ("_sync_fp32_params_to_fp16", step_launches.wrap_sync_params),
                            ("zero_grad", step_launches.wrap_zero_grad)):
        _wrap(owner, attribute, lambda original, wrap=wrap: _marked(wrap(original)))


def patch_tracking_steps():
    from . import step_offset

    owner = "fairseq.logging.progress_bar."
    for cls, attribute in (("TensorboardProgressBarWrapper", "_log_to_tensorboard"),
                           ("WandBProgressBarWrapper", "_log_to_wandb")):
        _wrap(owner + cls, attribute, lambda original: _marked(step_offset.wrap_log(original)))


def patch_clip_grad_norm_():
    from . import step_launches

    _wrap("fairseq.utils", "clip_grad_norm_",
          lambda original: _marked(step_launches.wrap_clip_grad_norm_(original)))


def patch_log_file():
    from . import log_file

    module = importlib.import_module("fairseq.logging.progress_bar")
    _wrap("fairseq.logging.progress_bar", "progress_bar",
          lambda original: _marked(log_file.wrap_progress_bar(original, module.logger)))


def _marked(wrapper):
    setattr(wrapper, WRAPPED, True)
    return wrapper


PATCHES = (patch_checkpoint_loading, patch_call_main, patch_all_gather_list,
           patch_distributed_model, patch_begin_valid_epoch, patch_checkpoint_copy,
           patch_checkpoint_save, patch_reduce_and_log_stats, patch_fp16_clip_grad_norm,
           patch_fp16_copies, patch_clip_grad_norm_, patch_tracking_steps, patch_log_file)

# (module or class, attribute) of every name above, for the test that pins them
PATCHED_NAMES = (
    ("fairseq.checkpoint_utils", "torch"),
    ("fairseq.distributed.utils", "call_main"),
    ("fairseq.distributed.utils", "all_gather_list"),
    ("fairseq.models.distributed_fairseq_model", "DistributedFairseqModel"),
    ("fairseq.models", "DistributedFairseqModel"),
    ("fairseq.trainer.Trainer", "begin_valid_epoch"),
    ("fairseq.file_io.PathManager", "copy"),
    ("fairseq.checkpoint_utils", "_torch_persistent_save"),
    ("fairseq.checkpoint_utils", "torch_persistent_save"),
    ("fairseq.trainer.Trainer", "_reduce_and_log_stats"),
    ("fairseq.optim.fp16_optimizer._FP16OptimizerMixin", "clip_grad_norm"),
    ("fairseq.optim.fp16_optimizer._FP16OptimizerMixin", "_sync_fp16_grads_to_fp32"),
    ("fairseq.optim.fp16_optimizer._FP16OptimizerMixin", "_sync_fp32_params_to_fp16"),
    ("fairseq.optim.fp16_optimizer._FP16OptimizerMixin", "zero_grad"),
    ("fairseq.utils", "clip_grad_norm_"),
    ("fairseq.logging.progress_bar.TensorboardProgressBarWrapper", "_log_to_tensorboard"),
    ("fairseq.logging.progress_bar.WandBProgressBarWrapper", "_log_to_wandb"),
    ("fairseq.logging.progress_bar", "progress_bar"),
)


def install():
    for patch in PATCHES:
        patch()
