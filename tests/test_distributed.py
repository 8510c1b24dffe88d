"""torchrun forms one world on CPU (gloo): the same training as one process with the same
global batch, and exact validation metrics."""

import json
import os
import re
import signal
import subprocess
import time

import pytest
import torch
from conftest import BIN, TINY_ROBERTA, ehft, finish, free_port, gpt2_flags, prepare_rte, run, \
    shared, subset, valid_records

from ehft_plugin.fairseq_compat.distributed import torchrun_settings

TORCHRUN_ENV = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29500"}


def test_settings_come_from_torchrun_environment():
    assert torchrun_settings(TORCHRUN_ENV, cuda=False) == {
        "distributed_init_method": "env://", "distributed_world_size": 2,
        "distributed_rank": 1, "distributed_no_spawn": True, "distributed_num_procs": 1,
        "device_id": 0, "distributed_backend": "gloo"}
    assert torchrun_settings(TORCHRUN_ENV, cuda=True)["device_id"] == 1  # LOCAL_RANK, not RANK
    assert "distributed_backend" not in torchrun_settings(TORCHRUN_ENV, cuda=True)
    assert torchrun_settings({}, cuda=False) is None  # not under torchrun
    assert torchrun_settings(dict(TORCHRUN_ENV, WORLD_SIZE="1", RANK="0"), cuda=False) is None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_rte(tmp_path_factory.mktemp("dist"), rows=40)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def _fairseq_train(data, save_dir, *extra):
    """fairseq-train of a tiny roberta_ehft on CPU, 4 sentences a batch per process."""
    arch = [a if a != "roberta_base" else "roberta_ehft_base" for a in TINY_ROBERTA]
    return [BIN / "fairseq-train", data, "--user-dir", "ehft_plugin", "--task", "glue_ehft",
            "--criterion", "sentence_prediction_ehft", *arch, "--optimizer", "adam",
            "--lr", "1e-3", "--batch-size", "4", "--cpu", "--num-workers", "0", "--seed", "1",
            "--save-dir", save_dir, "--log-format", "json", "--log-interval", "1",
            "--no-epoch-checkpoints", *extra]


def _start(cmd):
    """A job in its own session, so that a hung torchrun can be killed with all its workers."""
    return subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=ENV,
                            start_new_session=True)


def _losses(log):
    return [float(json.loads(line.split("| train_inner | ", 1)[1])["loss"])
            for line in log.splitlines() if "| train_inner | " in line]


def _train(data, save_dir, nproc, update_freq=1):
    cmd = _fairseq_train(data, save_dir, "--update-freq", str(update_freq), "--max-update", "6")
    log = _finished(cmd, nproc)
    return log, _losses(log), valid_records(log)


def _finished(cmd, nproc):
    """The output of `cmd`, run in `nproc` processes by torchrun if more than one; it must
    succeed."""
    if nproc > 1:
        cmd = [BIN / "torchrun", "--nproc-per-node", str(nproc), "--master-port",
               str(free_port()), *cmd]
    job = _start(cmd)
    [log] = finish([job])
    assert job.returncode == 0, log[-3000:]
    return log


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(data, tmp_path):
    # fairseq deals the (shuffled) batches to ranks in turn, so 2 ranks x 4 sentences see
    # what one process sees accumulating 2 batches of 4 (--update-freq 2)
    log2, losses2, valid2 = _train(data, tmp_path / "two", nproc=2)
    log1, losses1, valid1 = _train(data, tmp_path / "one", nproc=1, update_freq=2)
    assert "torchrun: rank 0 of world size 2" in log2 and "rank 1 of world size 2" in log2
    assert "backend gloo" in log2
    # every validation compared the ranks' parameters (ehft_plugin/fairseq_compat/replicas.py)
    assert log2.count("replicas agree: parameters bit-identical on all 2 ranks") == len(valid2)
    # rank 0 logs; each line is the global batch of both ranks
    assert len(losses2) == len(losses1) == 6
    assert losses2 == pytest.approx(losses1, abs=2e-3)  # the logged loss has 3 digits
    one = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=False)["model"]
    two = torch.load(tmp_path / "two" / "checkpoint_last.pt", weights_only=False)["model"]
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5), key
    # validation: every dev example scored once across the two ranks, same accuracy
    assert valid2[-1]["valid_accuracy"] == valid1[-1]["valid_accuracy"]
    assert float(valid2[-1]["valid_loss"]) == pytest.approx(float(valid1[-1]["valid_loss"]),
                                                           abs=2e-3)


@pytest.mark.slow
def test_correlations_gather_every_prediction_across_ranks(tmp_path):
    raw = subset(shared("glue", "STS-B"), tmp_path / "raw", rows=30)
    ehft("prepare", "stsb", "--raw-dir", raw, "--out-dir", tmp_path / "bin", *gpt2_flags())
    _, _, valid2 = _train(tmp_path / "bin", tmp_path / "two", nproc=2)
    _, _, valid1 = _train(tmp_path / "bin", tmp_path / "one", nproc=1, update_freq=2)
    for metric in ("valid_pearson", "valid_spearman"):  # from all predictions, not averaged
        assert float(valid2[-1][metric]) == pytest.approx(float(valid1[-1][metric]), abs=0.02)


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--fp16", "--amp"])
def test_half_precision_on_cpu_is_a_clear_error(data, tmp_path, flag):
    result = run(_fairseq_train(data, tmp_path, "--max-update", "1", flag), check=False,
                 cwd=ROOT)
    assert result.returncode != 0
    assert "error: %s needs a CUDA device; on CPU train in float32" % flag in result.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def _node(data, save_dir, rank, port):
    return _start([BIN / "torchrun", "--nnodes", "2", "--node-rank", str(rank),
                   "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port",
                   str(port), *_fairseq_train(data, save_dir, "--max-update", "6")])


@pytest.mark.slow
def test_two_nodes_rendezvous_into_one_world(data, tmp_path):
    port = free_port()
    nodes = [_node(data, tmp_path / ("node%d" % r), r, port) for r in (0, 1)]
    logs = finish(nodes)
    assert [n.returncode for n in nodes] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    assert "torchrun: rank 0 of world size 2" in logs[0]
    assert "torchrun: rank 1 of world size 2" in logs[1]
    _, losses1, _ = _train(data, tmp_path / "one", nproc=1, update_freq=2)
    assert _losses(logs[0]) == pytest.approx(losses1, abs=2e-3)
    one = torch.load(tmp_path / "one" / "checkpoint_last.pt", weights_only=False)["model"]
    two = torch.load(tmp_path / "node0" / "checkpoint_last.pt", weights_only=False)["model"]
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)


@pytest.mark.slow
def test_a_dying_rank_ends_the_job_and_a_relaunch_resumes(data, tmp_path):
    port = free_port()

    def launch(max_update):
        return _start([BIN / "torchrun", "--nproc-per-node", "2", "--master-port", str(port),
                       *_fairseq_train(data, tmp_path, "--max-update", str(max_update),
                                       "--save-interval-updates", "2")])

    job = launch(100000)
    deadline = time.time() + 120
    while not (tmp_path / "checkpoint_last.pt").exists() and time.time() < deadline:
        time.sleep(0.5)
    assert (tmp_path / "checkpoint_last.pt").exists(), "no checkpoint within 120 s"
    workers = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True,
                             text=True).stdout.split()
    rank1 = [pid for pid in workers
             if b"RANK=1\x00" in open("/proc/%s/environ" % pid, "rb").read()]
    assert len(rank1) == 1
    killed_at = time.time()
    os.kill(int(rank1[0]), signal.SIGKILL)
    [log] = finish([job], timeout=120)
    assert job.returncode != 0  # the job ends with an error instead of hanging
    assert time.time() - killed_at < 60
    assert "ChildFailedError" in log or "exitcode  : -9" in log
    resumed = launch(8)
    [log] = finish([resumed])
    assert resumed.returncode == 0, log[-3000:]
    match = re.search(r"Loaded checkpoint \S+checkpoint_last.pt \(epoch \d+ @ (\d+) updates\)",
                      log)
    assert match and int(match.group(1)) >= 2, log[-3000:]


@pytest.mark.slow
def test_ehft_train_runs_both_stages_in_one_torchrun_launch(data, tmp_path):
    from conftest import stock_checkpoint

    checkpoint = stock_checkpoint(data, tmp_path / "pretrained")
    args = ["train", "--method", "ehft-bitfit", "--data", data, "--checkpoint", checkpoint,
            "--total-updates", "6", "--batch-size", "4", "--stage1-ratio", "0.1"]
    fairseq = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0",
               "--attention-dropout", "0"]  # no random masks: ranks and one process agree
    # each stage meets on the port after the last one's (ehft_plugin/train/launcher.py)
    job = _start([BIN / "torchrun", "--nproc-per-node", "2", "--master-port", str(free_port(3)),
                  BIN / "ehft", *args, "--save-dir", tmp_path / "two", *fairseq])
    [log] = finish([job])
    assert job.returncode == 0, log[-3000:]
    # rank 0's fairseq-train output is in the stages' fairseq.out, the other rank's on the
    # console (ehft train shows progress lines instead)
    log += "".join(p.read_text() for p in sorted(
        (tmp_path / "two" / "rte" / "ehft-bitfit" / "seed1").glob("*/fairseq.out")))
    for rank in (0, 1):  # both stages ran in one world of 2
        assert log.count("torchrun: rank %d of world size 2" % rank) == 2
    # one process accumulating 2 batches of 4 sees what the 2 ranks see together
    run([BIN / "ehft", *args, "--save-dir", tmp_path / "one", *fairseq, "--update-freq", "2"],
        env=ENV, cwd=ROOT)
    two = tmp_path / "two" / "rte" / "ehft-bitfit" / "seed1"
    one = tmp_path / "one" / "rte" / "ehft-bitfit" / "seed1"
    for stage in ("stage1", "stage2"):
        assert json.loads((two / stage / "done.json").read_text())["updates"] == (
            1 if stage == "stage1" else 5)
    assert (two / "stage1" / "head.safetensors").is_file()
    a = torch.load(one / "stage2" / "checkpoint_last.pt", weights_only=False)["model"]
    b = torch.load(two / "stage2" / "checkpoint_last.pt", weights_only=False)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("nproc,update_freq", [(1, 2), (2, 1)])
def test_total_epochs_are_passes_over_the_data(data, tmp_path, nproc, update_freq):
    """40 examples, batches of 4: 10 batches an epoch, 5 updates when two batches make an
    update or two processes share them; --total-epochs 2 is 10 updates and ends with the
    end of fairseq's second epoch."""
    from conftest import stock_checkpoint

    checkpoint = stock_checkpoint(data, tmp_path / "pretrained")
    cmd = [BIN / "ehft", "train", "--method", "ft", "--data", data, "--checkpoint", checkpoint,
           "--total-epochs", "2", "--batch-size", "4", "--save-dir", tmp_path / "runs", "--",
           "--cpu", "--num-workers", "0", "--max-positions", "128",
           "--update-freq", str(update_freq)]
    _finished(cmd, nproc)
    stage = tmp_path / "runs" / "rte" / "ft" / "seed1" / "finetune"
    assert json.loads((stage / "done.json").read_text())["trained_updates"] == 10
    train_log = (stage / "train.log").read_text()
    assert "end of epoch 2 (average epoch stats below)" in train_log
    assert "begin training epoch 3" not in train_log
    lines = train_log.splitlines()  # stock fairseq writes epoch k's lines k times in a row
    assert not [a for a, b in zip(lines, lines[1:]) if a == b]
