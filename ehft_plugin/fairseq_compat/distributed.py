"""One world under `torchrun`, on GPUs and on CPUs, without extra flags (fixed in the plugin,
not by editing fairseq).

Stock fairseq under torchrun on CPU trains every rank alone (its default world size is the
number of GPUs, so it never reads WORLD_SIZE), or, once --distributed-world-size is given,
divides by zero (rank % torch.cuda.device_count()); on GPUs it takes the device from the
global RANK instead of LOCAL_RANK. On CPU its DistributedDataParallel wrapper passes CUDA
device ids, and `all_gather_list` stages through a CUDA buffer. This module, installed when
the plugin is imported (as --user-dir does, before fairseq reads its distributed settings):

- fills fairseq's distributed settings from torchrun's RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR and MASTER_PORT: init method env://, the device LOCAL_RANK on CUDA, the gloo
  backend on CPU (nccl cannot run there);
- wraps the model in torch's DistributedDataParallel without device ids on CPU;
- gathers Python objects with torch.distributed.all_gather_object in a gloo group;
- makes every rank read a checkpoint itself (fairseq's broadcast from rank 0 unpickles on
  the other ranks with torch.load, which torch >= 2.6 refuses for fairseq's states); like
X

The checks of precision and optimizer flags that run at the same moment are preflight.py's.
"""

import logging
import os
import subprocess

from ..errors import EhftError

logger = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# set by srun for each task of a job step (a batch script outside srun has no step)
SLURM_STEP_VARS = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_STEP_NUM_TASKS",
                   "SLURM_STEP_NODELIST")
SLURM_PORTS = (20000, 10000)  # a job's default rendezvous port: first + job id % span


def slurm_as_torchrun(environ):
    """torchrun's variables for a task of an `srun` job step of two or more tasks, or None
    (not in a step, alone in it, or already under torchrun). The rendezvous host is the
    step's first node, as fairseq's own Slurm path finds it (`scontrol show hostnames`); the
    port MASTER_PORT if set, else one derived from the job id, the same on every task."""
    if all(k in environ for k in TORCHRUN_VARS) or \
            not all(k in environ for k in SLURM_STEP_VARS) or \
            int(environ["SLURM_STEP_NUM_TASKS"]) < 2:
        return None
    return {"RANK": environ["SLURM_PROCID"], "WORLD_SIZE": environ["SLURM_STEP_NUM_TASKS"],
            "LOCAL_RANK": environ["SLURM_LOCALID"],
            "MASTER_ADDR": environ.get("MASTER_ADDR") or first_host(
                environ["SLURM_STEP_NODELIST"]),
            "MASTER_PORT": environ.get("MASTER_PORT") or str(slurm_port(environ))}


def slurm_port(environ):
    first, span = SLURM_PORTS
    return first + int(environ.get("SLURM_JOB_ID", "0") or 0) % span


def first_host(nodelist):
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        raise EhftError("SLURM_STEP_NODELIST %s: `scontrol show hostnames` failed (%s); set "
                        "MASTER_ADDR to the first node's address" % (nodelist, e)) from None
    if not out:
        raise EhftError("SLURM_STEP_NODELIST %s: `scontrol show hostnames` names no host; set "
                        "MASTER_ADDR" % nodelist)
    return out[0]


def adopt_slurm_step(environ=None):
    """Under srun, put torchrun's variables into the environment (for torch's env://
    rendezvous, the launcher's rank and its children); returns the variables set, or None."""
    environ = os.environ if environ is None else environ
    settings = slurm_as_torchrun(environ)
    if settings:
        environ.update(settings)
    return settings


def torchrun_settings(environ, cuda):
    """The fairseq distributed settings torchrun's environment asks for, or None when the
    process was not started by torchrun (or is alone in its world)."""
    if not all(k in environ for k in TORCHRUN_VARS) or int(environ["WORLD_SIZE"]) < 2:
        return None
    return {"distributed_init_method": "env://",
            "distributed_world_size": int(environ["WORLD_SIZE"]),
            "distributed_rank": int(environ["RANK"]),
            "distributed_no_spawn": True,  # torchrun started the processes
            "distributed_num_procs": 1,
            "device_id": int(environ["LOCAL_RANK"]) if cuda else 0,
            **({} if cuda else {"distributed_backend": "gloo"})}


def join_torchrun_world(cfg):
    """Fill fairseq's distributed settings from torchrun's environment (unless the command
    line set an init method); run as fairseq's call_main starts (`compat`)."""
    import torch
    from omegaconf import open_dict

    dist_cfg = cfg.distributed_training
    cuda = torch.cuda.is_available() and not cfg.common.cpu
    if dist_cfg.distributed_init_method:
        return
    # under srun, torchrun's variables from the step's (unless --distributed-port asks for
    # fairseq's own Slurm route, which needs --distributed-world-size and a GPU a task)
    if (dist_cfg.distributed_port or -1) <= 0:
        adopt_slurm_step()
    settings = torchrun_settings(os.environ, cuda)
    if not settings:
        return
    # the variables came from an srun step (here or in `ehft train`, the parent)
    source = "slurm" if os.environ.get("SLURM_STEP_NUM_TASKS") == os.environ.get(
        "WORLD_SIZE") and os.environ.get("SLURM_PROCID") == os.environ.get("RANK") \
        else "torchrun"
    with open_dict(dist_cfg):
        for key, value in settings.items():
            setattr(dist_cfg, key, value)
    # fairseq otherwise loads a checkpoint on rank 0 and sends it pickled to the others,
    # whose torch.load (weights_only under torch >= 2.6) refuses it; every rank reads the
    # file through the plugin's allow-listed loader instead
    with open_dict(cfg.checkpoint):
        cfg.checkpoint.load_checkpoint_on_all_dp_ranks = True
    logger.info("%s: rank %d of world size %d (local rank %s, %s, backend %s)", source,
                settings["distributed_rank"], settings["distributed_world_size"],
                os.environ["LOCAL_RANK"], "cuda:%d" % settings["device_id"] if cuda else "cpu",
                dist_cfg.distributed_backend)


def wrap_distributed_model(original):
    def DistributedFairseqModel(args, model, process_group, device):
        import torch
        from fairseq.distributed import ModuleProxyWrapper

        if getattr(device, "type", str(device)) == "cpu" and args.ddp_backend in (
                "c10d", "pytorch_ddp"):
            wrapped = torch.nn.parallel.DistributedDataParallel(
                module=model.to(device), device_ids=None, output_device=None,
                broadcast_buffers=args.broadcast_buffers, bucket_cap_mb=args.bucket_cap_mb,
                process_group=process_group,
                find_unused_parameters=args.find_unused_parameters,
                gradient_as_bucket_view=args.gradient_as_bucket_view)
            return ModuleProxyWrapper(wrapped)
        return original(args, model, process_group, device)
    DistributedFairseqModel.ehft_wrapped = True
    return DistributedFairseqModel


def wrap_all_gather_list(original):
    def all_gather_list(data, group=None, max_size=16384):
        import torch.distributed as dist

        # fairseq's version stages through a CUDA buffer; a gloo group (CPU training, even
        # on a machine with GPUs) gathers the objects directly
        if dist.get_backend(group) != "gloo":
            return original(data, group=group, max_size=max_size)
        out = [None] * dist.get_world_size(group=group)
        dist.all_gather_object(out, data, group=group)
        return out
    all_gather_list.ehft_wrapped = True
    return all_gather_list
