"""fairseq's TensorBoard and W&B progress-bar wrappers with their logged step moved on by the
environment's STEP_OFFSET, so that a run's stage 2 draws on from stage 1's last update
(train/tracking.py sets it for each stage)."""

import os

STEP_OFFSET = "EHFT_STEP_OFFSET"  # added by the patched wrappers to every logged step


def wrap_log(original):
    """A fairseq progress-bar wrapper's _log_to_tensorboard / _log_to_wandb whose step is
    moved on by the environment's STEP_OFFSET (0 without it)."""
    def log(self, stats, tag=None, step=None):
        offset = int(os.environ.get(STEP_OFFSET, "0") or 0)
        if offset:
            if step is None and "num_updates" in stats:
                step = stats["num_updates"]
            if step is not None:
                step = step + offset
        return original(self, stats, tag, step)

    return log
