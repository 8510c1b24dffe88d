"""Each stage's done.json says which software finished it (see also test_launcher)."""

import subprocess

import pytest
import torch

from ehft_plugin.train import provenance


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.mark.slow
def test_git_state_names_the_commit_and_whether_the_plugin_code_changed(tmp_path):
    plugin = tmp_path / "ehft_plugin"
    plugin.mkdir()
    (plugin / "launcher.py").write_text("A = 1\n")
    (tmp_path / "README.md").write_text("notes\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    assert provenance.git_state(str(tmp_path)) == {"git_commit": head,
                                                   "plugin_code_modified": False}
    (tmp_path / "README.md").write_text("other notes\n")  # outside the plugin: not counted
    (plugin / "new_module.py").write_text("")  # untracked: not counted either
    assert provenance.git_state(str(tmp_path))["plugin_code_modified"] is False
    (plugin / "launcher.py").write_text("A = 2\n")
    assert provenance.git_state(str(tmp_path))["plugin_code_modified"] is True


def test_git_state_is_empty_outside_a_checkout(tmp_path):
    assert provenance.git_state(str(tmp_path)) == {}


@pytest.mark.slow
def test_software_names_the_libraries_in_use():
    info = provenance.software()
    assert info["torch"] == torch.__version__
    assert set(info) >= {"ehft_plugin", "fairseq", "torch", "python"}
