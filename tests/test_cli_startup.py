"""The `ehft` command imports fairseq (seconds) only for the subcommands that need it (`ehft
train` leaves it to its fairseq-train children); importing the package never imports fairseq,
and registers the plugin once fairseq is imported, as fairseq's --user-dir needs."""

import subprocess
import sys
import pytest
from conftest import prepare_rte, stock_checkpoint

# these tests (or their fixtures) start processes; cold, since what they check is what a
# process imports from its start
pytestmark = [pytest.mark.slow, pytest.mark.cold]

PROBE = """
import sys
sys.argv[0] = {argv0!r}
import ehft_plugin.cli
try:
    ehft_plugin.cli.main({args!r})
except SystemExit:
    pass
print("fairseq imported:", "fairseq" in sys.modules)
"""


def _probe(argv0, args):
    result = subprocess.run([sys.executable, "-c", PROBE.format(argv0=argv0, args=args)],
                            capture_output=True, text=True)
    return result.stdout.strip().splitlines()[-1], result.stderr


def test_help_report_and_refused_arguments_answer_without_importing_fairseq(tmp_path):
    line, err = _probe("/venv/bin/ehft", ["report", str(tmp_path / "none"), "--out",
                                          str(tmp_path / "r.md")])
    assert line == "fairseq imported: False"
    assert "ehft report: error: %s: no such directory" % (tmp_path / "none") in err
    line, _ = _probe("/venv/bin/ehft", ["train", "--method", "ft", "--data", str(tmp_path),
                                        "--checkpoint", "x.pt", "--save-dir", str(tmp_path),
                                        "--batch-size", "0"])
    assert line == "fairseq imported: False"


def test_ehft_train_runs_two_stages_and_the_hand_over_without_importing_fairseq(tmp_path):
    data = prepare_rte(tmp_path, rows=40)
    checkpoint = stock_checkpoint(data, tmp_path / "pretrained")
    line, err = _probe("/venv/bin/ehft", [
        "train", "--method", "lp-ft", "--data", str(data), "--checkpoint", str(checkpoint),
        "--save-dir", str(tmp_path / "runs"), "--total-updates", "2", "--stage1-updates", "1",
        "--batch-size", "8", "--quiet", "--", "--cpu", "--num-workers", "0",
        "--max-positions", "128"])
    run = tmp_path / "runs" / "rte" / "lp-ft" / "seed1"
    assert (run / "stage1" / "head.safetensors").is_file(), err[-3000:]
    assert (run / "stage2" / "done.json").is_file() and line == "fairseq imported: False"


def test_subcommands_that_need_fairseq_register_the_plugin(tmp_path):
    line, err = _probe("/venv/bin/ehft", ["predict", "--checkpoint", str(tmp_path / "no.pt"),
                                          "--input", "x", "--out", str(tmp_path / "p.tsv")])
    assert line == "fairseq imported: True" and "no.pt: checkpoint not found" in err


def test_any_other_import_registers_the_plugin_with_fairseq():
    code = ("import sys; sys.argv[0] = 'fairseq-train'; import ehft_plugin; "
            "from fairseq.tasks import TASK_REGISTRY; from fairseq.models import MODEL_REGISTRY; "
            "print('glue_ehft' in TASK_REGISTRY and 'roberta_ehft' in MODEL_REGISTRY)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "True", result.stderr[-2000:]


@pytest.mark.parametrize("argv0", ["/venv/bin/ehft", "fairseq-train", "-c"])
def test_the_package_never_imports_fairseq_and_registers_when_fairseq_is_imported(argv0):
    code = ("import sys; sys.argv[0] = %r; import ehft_plugin; print('fairseq' in sys.modules); "
            "from fairseq.tasks import TASK_REGISTRY; from fairseq.models import MODEL_REGISTRY; "
            "print('glue_ehft' in TASK_REGISTRY and 'roberta_ehft' in MODEL_REGISTRY)" % argv0)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.split() == ["False", "True"], result.stderr[-2000:]
