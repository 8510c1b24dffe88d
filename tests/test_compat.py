"""Every name the plugin patches in fairseq, pinned: each exists, is wrapped once, and a
fairseq without it stops the import with a message naming the name and the version."""

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
    assert len(compat.PATCHES) == 12  # one function per patched name (DDP has two homes;
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

