"""Kill anywhere, lose nothing: `ehft train` killed with SIGKILL (launcher and fairseq-train
together) at any point of an EH-FT run, then launched again, finishes with the final
parameters of an uninterrupted run of the same seed, bit for bit."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from conftest import BIN, ehft, prepare_rte, stock_checkpoint

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes

FAIRSEQ = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    data = prepare_rte(tmp, rows=40)  # 5 batches of 8: an epoch checkpoint every 5 updates
    checkpoint = stock_checkpoint(data, tmp / "pretrained")
    args = ["--method", "ehft-bitfit", "--data", str(data), "--checkpoint", str(checkpoint),
            "--total-updates", "14", "--stage1-ratio", "0.5", "--batch-size", "8"]
    ehft("train", "--save-dir", tmp / "reference", *args, *FAIRSEQ)
    return {"args": args, "reference": tmp / "reference" / "rte" / "ehft-bitfit" / "seed1"}


def _kill_when(save_dir, args, relative, timeout=300):
    """Start `ehft train`, SIGKILL its whole process group as soon as `relative` (a path in
    the run directory) exists; returns whether it was killed before finishing."""
    run_dir = save_dir / "rte" / "ehft-bitfit" / "seed1"
    process = subprocess.Popen([str(BIN / "ehft"), "train", "--save-dir", str(save_dir),
                                *args, *FAIRSEQ], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if (run_dir / relative).exists():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.005)
    process.wait()
    return False


# where a user's machine may die: each path is the first sign that the run reached the point
POINTS = {
    "inside stage 1, at its first checkpoint": "stage1/checkpoint_last.pt",
    "during the hand-over (head written, stage not recorded)": "stage1/head.safetensors",
    "when stage 2's start is written": "stage2/start.pt",
    "inside stage 2, before its first checkpoint": "stage2/train.log",
    # checkpoint_last.pt appears while fairseq copies checkpoint_best.pt over it
    "at stage 2's first checkpoint": "stage2/checkpoint_last.pt",
}


@pytest.mark.parametrize("point", list(POINTS))
def test_a_run_killed_anywhere_finishes_bit_identical_after_a_relaunch(setup, tmp_path, point):
    save_dir = tmp_path / "runs"
    assert _kill_when(save_dir, setup["args"], POINTS[point]), "the run finished before %s" % point
    run_dir = save_dir / "rte" / "ehft-bitfit" / "seed1"
    assert not (run_dir / "stage2" / "done.json").exists()
    result = ehft("train", "--save-dir", save_dir, *setup["args"], *FAIRSEQ, check=False)
    assert result.returncode == 0, result.stderr[-3000:]  # never a state a relaunch refuses
    for stage in ("stage1", "stage2"):
        assert json.loads((run_dir / stage / "done.json").read_text())["updates"] == 7
    ours = torch.load(run_dir / "stage2" / "checkpoint_last.pt", weights_only=False)
    theirs = torch.load(setup["reference"] / "stage2" / "checkpoint_last.pt",
                        weights_only=False)
    assert ours["optimizer_history"][-1]["num_updates"] == 7
    assert ours["model"].keys() == theirs["model"].keys()
    different = [k for k in ours["model"] if not torch.equal(ours["model"][k],
                                                             theirs["model"][k])]
    assert different == [], "%s: %d tensors differ, first %s" % (point, len(different),
                                                                 different[:1])


def test_a_plateau_stage1_resumed_keeps_its_patience(setup, tmp_path):
    """The default stage 1 stops after --stage1-patience validations without a gain; killed
    after its first validation and relaunched, it stops at the same update as an uninterrupted
    run (fairseq keeps the count in memory only; the task stores it in the checkpoint)."""
    data, checkpoint = setup["args"][3], setup["args"][5]
    # a tiny random RoBERTa stays at 50% on RTE: every validation after the first is no gain
    args = ["--method", "ehft-bitfit", "--data", data, "--checkpoint", checkpoint,
            "--total-updates", "3", "--batch-size", "8", "--stage1-patience", "3",
            "--stage1-max-epochs", "8"]
    ehft("train", "--save-dir", tmp_path / "reference", *args, *FAIRSEQ)
    reference = tmp_path / "reference" / "rte" / "ehft-bitfit" / "seed1"
    done = json.loads((reference / "stage1" / "done.json").read_text())
    # validations at the ends of passes 1-4 (5 updates each): the best, then 3 without a gain
    assert done["trained_updates"] == 20 and len(done["valid"]) == 4
    save_dir = tmp_path / "runs"
    assert _kill_when(save_dir, args, "stage1/checkpoint_last.pt")
    ehft("train", "--save-dir", save_dir, *args, *FAIRSEQ)
    run_dir = save_dir / "rte" / "ehft-bitfit" / "seed1"
    assert json.loads((run_dir / "stage1" / "done.json").read_text())["trained_updates"] == 20
    ours = torch.load(run_dir / "stage2" / "checkpoint_last.pt", weights_only=False)["model"]
    theirs = torch.load(reference / "stage2" / "checkpoint_last.pt", weights_only=False)["model"]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
