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

logger = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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
    settings = None if dist_cfg.distributed_init_method else torchrun_settings(os.environ, cuda)
    if not settings:
        return
    with open_dict(dist_cfg):
        for key, value in settings.items():
            setattr(dist_cfg, key, value)
    # fairseq otherwise loads a checkpoint on rank 0 and sends it pickled to the others,
    # whose torch.load (weights_only under torch >= 2.6) refuses it; every rank reads the
    # file through the plugin's allow-listed loader instead
    with open_dict(cfg.checkpoint):
        cfg.checkpoint.load_checkpoint_on_all_dp_ranks = True
    logger.info("torchrun: rank %d of world size %d (local rank %s, %s, backend %s)",
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
