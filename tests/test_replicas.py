"""Ranks compare their parameters at every validation: an exact fingerprint, and a clear error
when one rank's parameters drift."""

import subprocess
import textwrap

import pytest
import torch
from conftest import BIN, REPO, finish, free_port

from ehft_plugin.fairseq_compat.replicas import fingerprint, ranks_that_differ


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5),
                               torch.nn.Linear(5, 3).to(torch.bfloat16))


def test_equal_parameters_give_equal_fingerprints_and_one_ulp_changes_it():
    a, b = _model(), _model()
    assert torch.equal(fingerprint(a), fingerprint(b))
    with torch.no_grad():
        w = b[0].weight
        w[2, 3] = torch.nextafter(w[2, 3], torch.tensor(float("inf")))
    assert not torch.equal(fingerprint(a), fingerprint(b))


def test_the_fingerprint_sees_which_parameter_holds_which_values():
    a = _model()
    b = _model()
    with torch.no_grad():  # same multiset of values, swapped between two tensors
        b[0].bias.copy_(a[1].weight)
        b[1].weight.copy_(a[0].bias)
        assert not torch.equal(a[0].bias, a[1].weight)
    assert not torch.equal(fingerprint(a), fingerprint(b))


def test_ranks_that_differ_are_named_against_rank_0():
    assert ranks_that_differ([7, 7, 7]) == []
    assert ranks_that_differ([7, 8, 7, 9]) == [1, 3]


SCRIPT = textwrap.dedent("""
    import os, torch, torch.distributed as dist
    from ehft_plugin.fairseq_compat.replicas import check_replicas
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    if os.environ["DRIFT"] == "1" and dist.get_rank() == 1:
        with torch.no_grad():
            model.weight[0, 0] += 1e-7
    try:
        check_replicas(model, None, dist.get_world_size(), epoch=3)
        outcome = "agreed"
    except RuntimeError as error:
        outcome = str(error)
    # one file per rank: two ranks printing to one pipe can interleave mid-line
    with open(os.path.join(os.environ["OUT"], "rank%d" % dist.get_rank()), "w") as f:
        f.write(outcome)
    dist.destroy_process_group()
""")


def _torchrun(tmp_path, drift):
    """The outcome each rank reports, rank 0 first."""
    script = tmp_path / "check.py"
    script.write_text(SCRIPT)
    out = tmp_path / ("drift" + drift)
    out.mkdir()
    cmd = [str(BIN / "torchrun"), "--nproc-per-node", "2", "--master-port", str(free_port()),
           str(script)]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True,
                           env={"DRIFT": drift, "OUT": str(out), "PATH": "/usr/bin:/bin",
                                "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    [log] = finish([job], timeout=120)
    assert job.returncode == 0, log[-3000:]
    return [(out / ("rank%d" % rank)).read_text() for rank in (0, 1)]


@pytest.mark.slow
def test_a_rank_that_drifted_stops_every_rank_with_a_clear_error(tmp_path):
    assert _torchrun(tmp_path, "0") == ["agreed", "agreed"]
    message = ("data-parallel replicas diverged: the parameters of rank(s) [1] differ from "
               "rank 0's at the validation of epoch 3")
    assert _torchrun(tmp_path, "1") == [message, message]
