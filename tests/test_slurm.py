"""Slurm: the tasks of an `srun` job step form one world, for `fairseq-train --user-dir` and
for `ehft train`, as under torchrun. No Slurm here: two processes get the variables srun
gives its tasks, and a stub `scontrol` on PATH names the step's node (as the torchrun tests
fake a second node)."""

import json
import os
import stat

import pytest
import torch
from conftest import BIN, finish, free_port, prepare_rte, stock_checkpoint
from test_distributed import ROOT, _fairseq_train, _losses, _train

from ehft_plugin.fairseq_compat.distributed import slurm_as_torchrun
from ehft_plugin.errors import EhftError

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_rte(tmp_path_factory.mktemp("slurm"), rows=40)


@pytest.fixture
def scontrol(tmp_path):
    """A stub `scontrol show hostnames LIST` naming this machine; returns its PATH."""
    folder = tmp_path / "slurm-bin"
    folder.mkdir()
    stub = folder / "scontrol"
    stub.write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo 127.0.0.1 && '
                    'echo 127.0.0.2\n')
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return "%s%s%s" % (folder, os.pathsep, os.environ["PATH"])


def step(rank, tasks=2, **extra):
    """What srun sets for task `rank` of a one-node step of `tasks` tasks."""
    return dict({"SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
                 "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_STEP_NODELIST": "node01",
                 "SLURM_JOB_ID": "4242", "SLURM_NNODES": "1", "SLURM_NTASKS": str(tasks)},
                **extra)


def test_a_step_task_gets_torchrun_variables(scontrol, monkeypatch):
    monkeypatch.setenv("PATH", scontrol)
    assert slurm_as_torchrun(step(1)) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1",
                                          "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "24242"}
    # the port every task derives from the job id, or the one given
    assert slurm_as_torchrun(step(0, MASTER_PORT="1234"))["MASTER_PORT"] == "1234"
    assert slurm_as_torchrun(step(0, tasks=1)) is None  # alone in its step
    batch = {k: v for k, v in step(0).items() if not k.startswith("SLURM_STEP")}
    assert slurm_as_torchrun(batch) is None  # a batch script, outside srun
    torchrun = dict(step(0), RANK="0", WORLD_SIZE="4", LOCAL_RANK="0", MASTER_ADDR="h",
                    MASTER_PORT="1")
    assert slurm_as_torchrun(torchrun) is None  # torchrun under srun: torchrun's world


def test_without_scontrol_the_error_says_what_to_set(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EhftError, match=r"SLURM_STEP_NODELIST node01: `scontrol show hostnames` "
                                        r"failed .*set MASTER_ADDR"):
        slurm_as_torchrun(step(0))
    assert slurm_as_torchrun(step(0, MASTER_ADDR="10.0.0.1"))["MASTER_ADDR"] == "10.0.0.1"


def _srun(cmd, scontrol, port, tasks=2):
    """`srun --ntasks 2 CMD` on one node, faked: the tasks as processes with srun's
    variables."""
    import subprocess

    jobs = []
    for rank in range(tasks):
        env = dict(os.environ, OMP_NUM_THREADS="1", PATH=scontrol,
                   **step(rank, tasks, MASTER_PORT=str(port)))
        jobs.append(subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
                                     start_new_session=True))
    logs = finish(jobs)
    assert [j.returncode for j in jobs] == [0] * tasks, "\n".join(l[-2000:] for l in logs)
    return logs


def test_srun_fairseq_train_with_the_plugin_is_one_world(data, tmp_path, scontrol):
    logs = _srun(_fairseq_train(data, tmp_path / "two", "--max-update", "6"), scontrol,
                 free_port())
    assert "slurm: rank 0 of world size 2" in logs[0] and "backend gloo" in logs[0]
    assert "slurm: rank 1 of world size 2" in logs[1]
    # the two tasks train as one process accumulating their two batches
    _, losses1, _ = _train(data, tmp_path / "one", nproc=1, update_freq=2)
    assert _losses(logs[0]) == pytest.approx(losses1, abs=2e-3)
    one = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=False)["model"]
    two = torch.load(tmp_path / "two" / "checkpoint_last.pt", weights_only=False)["model"]
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)


def test_srun_ehft_train_runs_both_stages_in_one_world(data, tmp_path, scontrol):
    checkpoint = stock_checkpoint(data, tmp_path / "pretrained")
    cmd = [BIN / "ehft", "train", "--method", "ehft-bitfit", "--data", data, "--checkpoint",
           checkpoint, "--total-epochs", "1", "--stage1-updates", "1", "--batch-size", "4",
           "--save-dir", tmp_path / "runs", "--fairseq-output", "--", "--cpu", "--num-workers",
           "0", "--max-positions", "128"]
    logs = _srun(cmd, scontrol, free_port(3))
    for rank in (0, 1):  # both stages ran in one world of two
        assert logs[rank].count("slurm: rank %d of world size 2" % rank) == 2
    run = tmp_path / "runs" / "rte" / "ehft-bitfit" / "seed1"
    # 40 examples, batches of 4 dealt to 2 tasks: an epoch is 5 updates
    assert json.loads((run / "stage2" / "done.json").read_text())["trained_updates"] == 5
    assert (run / "stage1" / "head.safetensors").is_file()
