"""`ehft train --tensorboard DIR` / `--wandb-project P`: one TensorBoard folder and one W&B
run per stage of each run, named after it, stage 2's steps after stage 1's; read back with
TensorBoard's own event reader and W&B's offline run file."""

import glob
import json
import os
import struct

import pytest
from conftest import ehft, prepare_rte, stock_checkpoint

from ehft_plugin.train.rundir import train_records

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes

FAIRSEQ = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0",
           "--log-interval", "1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracking")
    data = prepare_rte(tmp, rows=40)
    checkpoint = stock_checkpoint(data, tmp / "pretrained")
    args = ["--data", data, "--checkpoint", checkpoint, "--total-updates", "3",
            "--batch-size", "8", "--stage1-updates", "2", "--quiet"]
    return {"tmp": tmp, "args": args}


def scalars(folder):
    """{tag: [(step, value)]} of the TensorBoard event files in `folder`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def test_each_stage_of_each_run_logs_to_its_own_folder_and_stage2_follows_stage1(setup):
    board = setup["tmp"] / "board"
    ehft("train", "--method", "ehft-bitfit", "ft", "--lr-stage2", "1e-5", "2e-5", "--seeds", "1",
         "--save-dir", setup["tmp"] / "runs", "--tensorboard", board, *setup["args"], *FAIRSEQ)
    stages = sorted(os.path.relpath(os.path.dirname(p), board)
                    for p in glob.glob(str(board / "**" / "events.out.tfevents.*"),
                                       recursive=True))
    runs = ["rte/ehft-bitfit/lr2=1e-05/seed1", "rte/ehft-bitfit/lr2=2e-05/seed1",
            "rte/ft/lr2=1e-05/seed1", "rte/ft/lr2=2e-05/seed1"]
    # fairseq writes one folder per tag (train_inner: every update, train: the epoch, valid)
    expected = sorted("%s/%s/%s" % (run, stage, tag) for run in runs
                      for stage in (("finetune",) if "/ft/" in run else ("stage1", "stage2"))
                      for tag in ("train_inner", "train", "valid"))
    assert stages == expected
    run = board / "rte" / "ehft-bitfit" / "lr2=1e-05" / "seed1"
    first = scalars(run / "stage1" / "train_inner")["loss"]
    second = scalars(run / "stage2" / "train_inner")["loss"]
    assert [step for step, _ in first] == [1, 2]
    assert [step for step, _ in second] == [3, 4, 5]  # stage 2's 3 updates after stage 1's 2
    assert [s for s, _ in scalars(run / "stage2" / "valid")["accuracy"]] == [5]
    # the values are the stage's own: its train.log holds the same losses at 1, 2, 3
    log = train_records(setup["tmp"] / "runs" / "rte" / "ehft-bitfit" / "lr2=1e-05" / "seed1" /
                        "stage2" / "train.log")
    assert [r["num_updates"] + 2 for r in log] == [step for step, _ in second]
    assert [r["loss"] for r in log] == pytest.approx([value for _, value in second], abs=1e-3)
    ft = board / "rte" / "ft" / "lr2=1e-05" / "seed1" / "finetune" / "train_inner"
    assert [s for s, _ in scalars(ft)["loss"]] == [1, 2, 3]
    # logging is no training setting: the runs record no tracking flag in their settings
    record = json.loads((setup["tmp"] / "runs" / "rte" / "ft" / "lr2=1e-05" / "seed1" /
                         "run.json").read_text())
    assert "--tensorboard-logdir" not in record["config"]["fairseq_args"]


def wandb_records(run_file):
    """The records of a W&B offline run file (.wandb: 32 KiB blocks of CRC, length and type
    headed chunks, as LevelDB's log), parsed with wandb's own protobuf messages."""
    from wandb.proto import wandb_internal_pb2

    data = open(run_file, "rb").read()
    pos, chunk, records = 7, b"", []  # after the file's header
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        part = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        chunk = part if kind in (1, 2) else chunk + part
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
    return records


def test_wandb_runs_are_named_per_stage_grouped_by_sweep_with_continued_steps(setup):
    pytest.importorskip("wandb")
    wandb_dir = setup["tmp"] / "wandb-dir"
    wandb_dir.mkdir()
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(wandb_dir), WANDB_SILENT="true")
    # the fairseq flag after '--' is split per stage as --wandb-project is
    ehft("train", "--method", "ehft-bitfit", "--seeds", "1", "--save-dir",
         setup["tmp"] / "sweep-a", *setup["args"], *FAIRSEQ, "--wandb-project", "p", env=env)
    runs = {}
    for run_file in glob.glob(str(wandb_dir / "wandb" / "offline-run-*" / "*.wandb")):
        records = wandb_records(run_file)
        [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        steps = sorted({r.history.step.num for r in records
                        if r.WhichOneof("record_type") == "history"})
        runs[run.display_name] = (run.project, run.run_group, run.job_type, steps)
    assert sorted(runs) == ["rte/ehft-bitfit/seed1/stage1", "rte/ehft-bitfit/seed1/stage2"]
    project, group, job, steps = runs["rte/ehft-bitfit/seed1/stage2"]
    assert (project, group, job) == ("p", "sweep-a", "stage2")
    assert min(steps) >= 3 and max(steps) == 5
    assert max(runs["rte/ehft-bitfit/seed1/stage1"][3]) == 2


def test_tracking_that_would_log_nothing_is_refused(setup, tmp_path):
    (tmp_path / "afile").write_text("")
    refused = ehft("train", "--method", "ft", "--save-dir", tmp_path / "runs",
                   "--tensorboard", tmp_path / "afile", *setup["args"], *FAIRSEQ, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().endswith("--tensorboard %s: is a file; expected a directory "
                                           "(created if missing)" % (tmp_path / "afile"))
    assert not (tmp_path / "runs").exists()
    dangling = ehft("train", "--method", "ft", "--save-dir", tmp_path / "runs",
                    *setup["args"], *FAIRSEQ, "--tensorboard-logdir", check=False)
    assert dangling.returncode == 2 and "--tensorboard-logdir after '--': expected a value" \
        in dangling.stderr
    assert not (tmp_path / "runs").exists()
