"""Data-parallel replicas must hold the same parameters: checked at every validation.

DistributedDataParallel keeps ranks in step only as long as every rank applies the same
averaged gradients; a rank that skipped an update, a parameter outside the reducer or an
optimizer that is not deterministic makes them drift apart silently, and rank 0's checkpoint
then stands for a model the others never trained. Each rank reduces its parameters' bits to
one integer (exact, independent of summation order and thread count) and the ranks compare.
"""

import logging

import torch

logger = logging.getLogger(__name__)

_SAME_SIZE_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_PRIME = 2 ** 31 - 1  # keeps every product below 2**63: no integer overflow anywhere


def fingerprint(model):
    """One integer from every parameter's bits, weighted by its position in the model. Integer
    sums are exact, so equal parameters give equal fingerprints on any device and thread count,
    and a change of one bit in one element changes the fingerprint."""
    total = torch.zeros((), dtype=torch.int64)
    for index, param in enumerate(model.parameters(), start=1):
        bits = param.detach().contiguous().view(_SAME_SIZE_INT[param.element_size()])
        value = bits.to(torch.int64).remainder(_PRIME).sum().remainder(_PRIME)
        total = (total.to(value.device) + value * index).remainder(_PRIME)
    return total.reshape(1)


def ranks_that_differ(fingerprints):
    return [rank for rank, value in enumerate(fingerprints) if value != fingerprints[0]]


def check_replicas(model, group, world_size, epoch):
    import torch.distributed as dist

    local = fingerprint(model)
    gathered = [torch.zeros_like(local) for _ in range(world_size)]
    dist.all_gather(gathered, local, group=group)
    differ = ranks_that_differ([int(t.item()) for t in gathered])
    if differ:
        raise RuntimeError("data-parallel replicas diverged: the parameters of rank(s) %s differ "
                           "from rank 0's at the validation of epoch %d" % (differ, epoch))
    logger.info("replicas agree: parameters bit-identical on all %d ranks", world_size)


def wrap_begin_valid_epoch(original):
    def begin_valid_epoch(self, epoch):
        dist_cfg = self.cfg.distributed_training
        # BMUF syncs every few updates and a sharded model holds a shard per rank: both
        # differ between ranks by design
        if (self.data_parallel_world_size > 1 and not self.cfg.optimization.use_bmuf
                and dist_cfg.ddp_backend != "fully_sharded"):
            check_replicas(self.get_model(), self.data_parallel_process_group,
                           self.data_parallel_world_size, epoch)
        return original(self, epoch)
    begin_valid_epoch.ehft_wrapped = True
    return begin_valid_epoch
