"""Checkpoints load under torch >= 2.6 with weights_only=True and an allow-list: resuming,
--restore-file of a stock fairseq checkpoint, from_pretrained; anything else is refused."""

import argparse
import os
import re
import signal
import subprocess

import numpy as np
import pytest
import torch
from conftest import (BIN, REPO, TINY_ROBERTA, ehft, fairseq_train, prepare_rte, run, shared,
                      stock_checkpoint)

from ehft_plugin.errors import CheckpointError


@pytest.fixture
def rte_bin(tmp_path):
    return prepare_rte(tmp_path, rows=64)


def _loaded_updates(log):
    match = re.search(r"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ (\d+) updates\)", log)
    return int(match.group(1)) if match else None


@pytest.mark.slow
def test_training_killed_mid_run_resumes_from_its_last_checkpoint(rte_bin, tmp_path):
    save_dir = tmp_path / "ck"
    cmd = [str(c) for c in [
        BIN / "fairseq-train", rte_bin, "--user-dir", REPO / "ehft_plugin", "--task", "glue_ehft",
        "--criterion", "sentence_prediction_ehft", *TINY_ROBERTA, "--optimizer", "adam",
        "--lr", "1e-3", "--batch-size", "8", "--cpu", "--save-dir", save_dir,
        "--save-interval-updates", "3", "--max-update", "100000", "--num-workers", "0",
        "--log-format", "simple"]]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        for line in process.stdout:  # wait for the first complete save, then kill hard
            if "Saved checkpoint" in line:
                break
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert (save_dir / "checkpoint_last.pt").is_file()

    result, _ = fairseq_train(rte_bin, save_dir, "--save-interval-updates", "3", updates=12)
    log = result.stdout + result.stderr
    resumed_at = _loaded_updates(log)
    assert resumed_at is not None and resumed_at >= 3, log[-2000:]
    assert "num_updates 12" in log or '"num_updates": "12"' in log


@pytest.mark.slow
def test_a_finished_run_continues_with_a_larger_budget(rte_bin, tmp_path):
    fairseq_train(rte_bin, tmp_path / "ck", updates=3)
    result, _ = fairseq_train(rte_bin, tmp_path / "ck", updates=6)
    assert _loaded_updates(result.stdout + result.stderr) == 3


@pytest.mark.slow
def test_checkpoint_saved_by_stock_fairseq_loads_with_the_plugin(rte_bin, tmp_path):
    stock = stock_checkpoint(rte_bin, tmp_path / "stock")  # our data also fits stock fairseq
    probe = "from fairseq import checkpoint_utils; checkpoint_utils.load_checkpoint_to_cpu(%r)"
    # the problem being solved: stock fairseq-fixed cannot read its own checkpoint
    without = run([BIN / "python", "-c", probe % str(stock)], check=False)
    assert without.returncode != 0 and "argparse.Namespace" in without.stderr
    with_plugin = run([BIN / "python", "-c", "import ehft_plugin; " + probe % str(stock)])
    assert with_plugin.returncode == 0

    result, records = fairseq_train(rte_bin, tmp_path / "ck", "--restore-file", stock,
                                    "--reset-optimizer", "--reset-dataloader", "--reset-meters",
                                    updates=2)
    assert "Loaded checkpoint %s" % stock in result.stdout + result.stderr
    assert "valid_accuracy" in records[-1]


@pytest.mark.slow
def test_from_pretrained_loads_a_plugin_checkpoint(rte_bin, tmp_path):
    import ehft_plugin  # noqa: F401  (safe loading, task registration)
    from fairseq.models.roberta import RobertaModel

    fairseq_train(rte_bin, tmp_path / "ck", updates=2)
    tokenizer = rte_bin / "tokenizer"  # ehft prepare keeps the tokeniser files with the data
    hub = RobertaModel.from_pretrained(
        str(tmp_path / "ck"), "checkpoint_last.pt", data_name_or_path=str(rte_bin),
        gpt2_encoder_json=str(tokenizer / "encoder.json"),
        gpt2_vocab_bpe=str(tokenizer / "vocab.bpe"))
    saved = torch.load(tmp_path / "ck" / "checkpoint_last.pt", weights_only=False)["model"]
    for name, value in hub.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    tokens = hub.encode("This is a test.", "It is.")
    assert tokens.tolist()[:2] == [0, 713] and tokens.tolist()[-1] == 2
    assert hub.predict("sentence_classification_head", tokens).shape == (1, 2)


# ---- what is refused, and how ----

class Evil:
    def __reduce__(self):
        return (os.system, ("touch %s" % os.environ["EHFT_TEST_MARKER"],))


def _load(path):
    import ehft_plugin  # noqa: F401
    from fairseq import checkpoint_utils

    return checkpoint_utils.load_checkpoint_to_cpu(str(path))


def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    marker = tmp_path / "was-run"
    monkeypatch.setenv("EHFT_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"args": argparse.Namespace(arch="roberta"), "model": {}, "x": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: needs the Python global posix.system, "
                                              r"which fairseq checkpoints do not carry"):
        _load(path)
    assert not marker.exists()


def test_weights_only_cannot_be_turned_off_by_the_caller(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    marker = tmp_path / "was-run"
    monkeypatch.setenv("EHFT_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    import ehft_plugin  # noqa: F401

    with open(path, "rb") as f, pytest.raises(CheckpointError):
        checkpoint_utils.torch.load(f, weights_only=False)
    assert not marker.exists()


class Harmless:
    pass


def test_an_unlisted_class_is_named_with_the_allow_list(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"args": argparse.Namespace(), "model": {}, "extra": Harmless()}, path)
    with pytest.raises(CheckpointError, match=r"custom.pt: needs the Python global "
                                              r"test_checkpoints.Harmless.*allowed globals: "
                                              r"argparse.Namespace, numpy"):
        _load(path)


def test_numpy_scalars_of_older_fairseq_checkpoints_load(tmp_path):
    from fairseq import checkpoint_utils

    from ehft_plugin.fairseq_compat.safe_loading import safe_load

    path = tmp_path / "old.pt"
    torch.save({"args": argparse.Namespace(arch="roberta"), "model": {"w": torch.ones(2)},
                "extra_state": {"val_loss": np.float64(1.5), "best": np.float32(0.25)}}, path)
    state = safe_load(str(path))
    assert state["extra_state"]["val_loss"] == 1.5 and state["args"].arch == "roberta"
    assert checkpoint_utils.torch.load is safe_load  # the loader fairseq uses


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"garbage.pt: cannot be read as a torch checkpoint"):
        _load(path)


@pytest.mark.slow
def test_rte_recipe_restores_a_checkpoint_and_trains(rte_bin, tmp_path):
    stock = stock_checkpoint(rte_bin, tmp_path / "stock")
    tiny = [a for a in TINY_ROBERTA if a != "roberta_base" and a != "--arch"]
    result = run(["bash", REPO / "examples" / "finetune_rte.sh", rte_bin, stock, "roberta_base",
                  tmp_path / "ck", *tiny, "--max-update", "2", "--cpu", "--num-workers", "0"],
                 env=dict(os.environ, PATH="%s:%s" % (BIN, os.environ["PATH"])))
    log = result.stdout + result.stderr
    assert "Loaded checkpoint %s" % stock in log
    assert '"valid_accuracy"' in log


@pytest.mark.slow
def test_rte_recipe_refuses_missing_inputs(tmp_path):
    result = run(["bash", REPO / "examples" / "finetune_rte.sh", tmp_path, tmp_path / "x.pt",
                  "roberta_base", tmp_path / "ck"], check=False)
    assert result.returncode == 2 and "not written by ehft prepare" in result.stderr


@pytest.mark.slow
def test_predict_refuses_missing_and_foreign_checkpoints(rte_bin, tmp_path):
    args = ["--input", shared("glue/RTE/dev.tsv"), "--out", tmp_path / "p.tsv"]
    missing = ehft("predict", "--checkpoint", tmp_path / "none.pt", *args, check=False)
    assert missing.returncode == 2 and "none.pt: checkpoint not found" in missing.stderr
    stock = stock_checkpoint(rte_bin, tmp_path / "stock")
    foreign = ehft("predict", "--checkpoint", stock, *args, check=False)
    assert foreign.returncode == 2
    assert "prediction needs --task glue_ehft" in foreign.stderr
    assert not (tmp_path / "p.tsv").exists()


# ---- errors inside fairseq's own paths end in one line ----

def _one_line_error(result):
    """The error line a fairseq command ended with; fails on a traceback or another status."""
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--restore-file", "--finetune-from-model"])
def test_fairseq_train_ends_in_one_line_on_a_refused_checkpoint(rte_bin, tmp_path, flag,
                                                                monkeypatch):
    marker = tmp_path / "was-run"
    monkeypatch.setenv("EHFT_TEST_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"args": argparse.Namespace(arch="roberta"), "model": {}, "x": Evil()}, path)
    result, _ = fairseq_train(rte_bin, tmp_path / "ck", flag, path, check=False)
    line = _one_line_error(result)
    assert line.startswith("fairseq-train: error: %s: needs the Python global posix.system"
                           % path), line
    assert not marker.exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs of its own, unmounted afterwards; skipped where mounting is not
    allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % result.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_full_disk_while_saving_is_one_line_and_the_relaunch_finishes(rte_bin, small_disk):
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave ~1 MiB: the run starts, its first checkpoint won't fit
        f.write(b"\0" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
                         - 2 ** 20))
    save_dir = small_disk / "ck"
    result, _ = fairseq_train(rte_bin, save_dir, updates=2, check=False)
    line = _one_line_error(result)
    assert re.match(r"fairseq-train: error: %s/checkpoint_\w+\.pt: no space left on device "
                    r"\([\d.]+ MiB free there\); the partial file was removed" % save_dir,
                    line), line
    assert sorted(p.name for p in save_dir.iterdir()) == [], "a partial file was left"
    filler.unlink()
    result, _ = fairseq_train(rte_bin, save_dir, updates=2)
    assert (save_dir / "checkpoint_last.pt").is_file()
    assert "done training" in result.stdout + result.stderr


def test_a_full_disk_found_by_torchs_zip_writer_is_named_and_not_retried(tmp_path, monkeypatch):
    import errno

    from ehft_plugin import atomic
    from ehft_plugin.errors import DiskFullError, describe

    fairseq_retries = []
    save = atomic.wrap_torch_save(lambda obj, f: fairseq_retries.append(f))
    monkeypatch.setattr(torch, "save", lambda obj, f: (_ for _ in ()).throw(
        RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed "
                     "writing file data/0: file write failed")))
    monkeypatch.setattr(atomic, "_no_space_left", lambda directory: True)
    with open(tmp_path / "checkpoint_last.pt.tmp", "wb") as f:
        with pytest.raises(DiskFullError, match=r"checkpoint_last.pt.tmp: no space left"):
            save({}, f)
    assert not fairseq_retries
    monkeypatch.setattr(atomic, "_no_space_left", lambda directory: False)
    with open(tmp_path / "other.pt", "wb") as f:
        save({}, f)  # another failure: fairseq's own retries take it
    assert len(fairseq_retries) == 1
    # a copy that finds the disk full leaves no partial copy behind
    copy = atomic.wrap_copy(lambda src, dst, overwrite: (open(dst, "wb").write(b"half"), (
        _ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))).__func__
    with pytest.raises(DiskFullError) as raised:
        copy(str(tmp_path / "a.pt"), str(tmp_path / "b.pt"))
    assert describe(raised.value).startswith("%s: no space left" % (tmp_path / "b.pt"))
    assert not list(tmp_path.glob("b.pt*"))
    assert describe(ValueError("a bug")) is None
