"""TensorBoard and W&B, one name per stage of each run.

fairseq logs to `--tensorboard-logdir DIR` and `--wandb-project P` as given: every stage and
seed of an `ehft train` would write into one folder, and fairseq names a W&B run after the
save directory's last part (`stage1`, `stage2`, `finetune`). `ehft train --tensorboard DIR`
/ `--wandb-project P` (or the same fairseq flags after `--`) give each stage its own
TensorBoard folder and W&B run, both named TASK/METHOD[/SETTING]/seedK/STAGE, grouped in W&B
by the save directory's name (the sweep). Stage 2 counts its steps on from stage 1's last
update (`STEP_OFFSET`), so that a run's stages draw as one curve.
"""

import importlib.util
import os

from ..errors import EhftError

from ..fairseq_compat.step_offset import STEP_OFFSET
_FLAGS = {"--tensorboard-logdir": "tensorboard", "--wandb-project": "wandb_project"}


def take_from_fairseq_args(opts):
    """Move --tensorboard-logdir / --wandb-project from the arguments after '--' into
    opts.tensorboard / opts.wandb_project (an explicit `ehft train` flag wins), so that they
    too are split per stage and run, and stay out of the run's recorded settings."""
    args, kept = list(opts.fairseq_args), []
    i = 0
    while i < len(args):
        name, eq, value = args[i].partition("=")
        if name in _FLAGS:
            if not eq:
                if i + 1 >= len(args):
                    raise EhftError("%s after '--': expected a value" % name)
                value = args[i + 1]
                i += 1
            if getattr(opts, _FLAGS[name], None) is None:
                setattr(opts, _FLAGS[name], value)
        else:
            kept.append(args[i])
        i += 1
    opts.fairseq_args = kept


def check(opts):
    """Refuse tracking that would log nothing (fairseq only warns): a --tensorboard that is a
    file, a logger whose package is missing."""
    board = getattr(opts, "tensorboard", None)
    if board is not None:
        if os.path.exists(board) and not os.path.isdir(board):
            raise EhftError("--tensorboard %s: is a file; expected a directory (created if "
                            "missing)" % board)
        if not (_importable("tensorboard") or _importable("tensorboardX")):
            raise EhftError("--tensorboard %s: neither the tensorboard nor the tensorboardX "
                            "package is installed (pip install tensorboard)" % board)
    if getattr(opts, "wandb_project", None) is not None and not _importable("wandb"):
        raise EhftError("--wandb-project %s: the wandb package is not installed (pip install "
                        "wandb)" % opts.wandb_project)


def _importable(name):
    return importlib.util.find_spec(name) is not None


def run_name(save_dir, stage_dir):
    """TASK/METHOD[/SETTING]/seedK/STAGE."""
    return os.path.relpath(stage_dir, save_dir).replace(os.sep, "/")


def fairseq_flags(opts, stage_dir):
    """The stage's own logging flags for fairseq-train."""
    name = run_name(opts.save_dir, stage_dir)
    flags = []
    if getattr(opts, "tensorboard", None) is not None:
        flags += ["--tensorboard-logdir", os.path.join(os.path.abspath(opts.tensorboard),
                                                       *name.split("/"))]
    if getattr(opts, "wandb_project", None) is not None:
        flags += ["--wandb-project", opts.wandb_project]
    return flags


def child_env(opts, stage_dir, earlier_stage_dirs, env=None):
    """The stage's fairseq-train environment: its step offset (the updates the run's earlier
    stages trained, read from their logs) and W&B run name, group and job type (a user's
    WANDB_RUN_GROUP stays); `env` as it is when nothing is tracked."""
    if getattr(opts, "tensorboard", None) is None and getattr(opts, "wandb_project", None) is None:
        return env
    from .rundir import LOG, last_update

    offset = sum(last_update(os.path.join(d, LOG)) or 0 for d in earlier_stage_dirs)
    env = dict(env if env is not None else os.environ)
    env[STEP_OFFSET] = str(int(offset))
    if getattr(opts, "wandb_project", None) is not None:
        name = run_name(opts.save_dir, stage_dir)
        env["WANDB_NAME"] = name
        env.setdefault("WANDB_RUN_GROUP", os.path.basename(os.path.abspath(opts.save_dir)))
        env["WANDB_JOB_TYPE"] = name.rsplit("/", 1)[-1]
    return env
