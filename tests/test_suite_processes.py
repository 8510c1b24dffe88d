"""scripts/suite_processes.py counts the processes a pytest run's tests start, by kind and by
test file (pytest's own processes left out)."""

import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow  # it runs pytest, which starts processes


def test_the_processes_a_test_starts_are_counted_by_kind_and_file(tmp_path):
    (tmp_path / "test_two.py").write_text(
        "import subprocess, sys\n\n\n"
        "def test_starts_two():\n"
        "    for _ in range(2):\n"
        "        subprocess.run([sys.executable, '-c', 'pass'], check=True)\n")
    log = tmp_path / "processes.jsonl"
    result = subprocess.run([sys.executable, REPO / "scripts" / "suite_processes.py", "--log",
                             log, "--", "-q", "-p", "no:cacheprovider", tmp_path / "test_two.py"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    kinds = result.stdout.split("by kind:\n")[1].split("by test file:\n")
    assert [line.split()[0] + " " + line.split(" s  ")[1] for line in
            kinds[0].strip().splitlines()] == ["2 python -c"]
    assert kinds[1].split() == ["2", "test_two.py"]
    assert len(log.read_text().splitlines()) == 3  # pytest itself, unattributed, and the two


def test_a_failing_run_keeps_pytests_exit_code(tmp_path):
    (tmp_path / "test_fails.py").write_text("def test_fails():\n    assert False\n")
    result = subprocess.run([sys.executable, REPO / "scripts" / "suite_processes.py", "--", "-q",
                             "-p", "no:cacheprovider", tmp_path / "test_fails.py"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1 and "1 failed" in result.stdout
