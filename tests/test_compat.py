"""Every name the plugin patches in fairseq, pinned: each exists, is wrapped once, and a
fairseq without it stops the import with a message naming the name and the version."""

import json
import os

import pytest
from conftest import BIN, run

import ehft_plugin  # noqa: F401  (installs the patches)
from ehft_plugin.fairseq_compat import compat


def _value(owner, attribute):
    return compat._owner(owner, attribute)[1]


@pytest.mark.parametrize("owner,attribute", compat.PATCHED_NAMES)
def test_every_patched_name_exists_and_is_the_plugins(owner, attribute):
    assert getattr(_value(owner, attribute), compat.WRAPPED, False)


def test_installing_twice_wraps_nothing_twice():
    before = [_value(o, a) for o, a in compat.PATCHED_NAMES]
    compat.install()
    assert [_value(o, a) for o, a in compat.PATCHED_NAMES] == before


def test_the_patches_are_the_ones_the_module_lists():
    assert len(compat.PATCHES) == 13  # one function per patched name (DDP has two homes;
    # the fp16 copies patch three names of one class, the tracking steps two classes, the
    # checkpoint save fairseq's two save functions)
    assert {o for o, _ in compat.PATCHED_NAMES} >= {"fairseq.checkpoint_utils",
                                                    "fairseq.trainer.Trainer"}


@pytest.mark.slow
def test_a_fairseq_without_a_patched_name_fails_at_import_naming_it():
    probe = ("import fairseq.trainer\n"
             "del fairseq.trainer.Trainer.begin_valid_epoch\n"
             "import ehft_plugin\n")
    result = run([BIN / "python", "-c", probe], check=False)
    assert result.returncode != 0
    assert ("ehft_plugin patches fairseq.trainer.Trainer.begin_valid_epoch, which fairseq "
            in result.stderr)
    assert "does not have; this plugin supports fairseq 0.12" in result.stderr


def test_the_log_file_gets_each_line_once_however_many_epochs_open_a_progress_bar(tmp_path):
    from fairseq.logging import progress_bar

    log, other = str(tmp_path / "train.log"), str(tmp_path / "other.log")
    before, level = list(progress_bar.logger.handlers), progress_bar.logger.level
    progress_bar.logger.setLevel("INFO")
    try:
        for epoch in (1, 2, 3):  # fairseq_cli.train opens one per epoch, each naming the file
            bar = progress_bar.progress_bar([], log_format="json", log_file=log, epoch=epoch)
            bar.print({"loss": float(epoch)}, tag="train", step=epoch)
        bar = progress_bar.progress_bar([], "json", 100, other, epoch=4)  # positional too
        bar.print({"loss": 4.0}, tag="train", step=4)
        for handler in progress_bar.logger.handlers:
            handler.flush()
        lines = open(log).read().splitlines()
        assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
        assert len(open(other).read().splitlines()) == 1  # another file has its own handler
    finally:
        progress_bar.logger.setLevel(level)
        for handler in set(progress_bar.logger.handlers) - set(before):
            progress_bar.logger.removeHandler(handler)
            handler.close()


def test_checkpoint_copies_are_all_or_nothing(tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    src, dst = tmp_path / "best.pt", tmp_path / "last.pt"
    src.write_bytes(b"new" * 1000)
    dst.write_bytes(b"old")
    seen = []
    real_replace = os.replace

    def watch(a, b):  # at the rename, the destination still holds the old file
        seen.append((dst.read_bytes(), open(a, "rb").read()))
        real_replace(a, b)

    monkeypatch.setattr("ehft_plugin.atomic.os.replace", watch)
    assert checkpoint_utils.PathManager.copy(str(src), str(dst), overwrite=True)
    assert seen == [(b"old", b"new" * 1000)] and dst.read_bytes() == b"new" * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]

