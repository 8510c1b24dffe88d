"""`make demo` end to end on a tiny budget: it trains each method on the embedded CB with the
converted backbone setup made, prints the measured table and writes the report files."""

import json
import os
import subprocess
from pathlib import Path
import pytest

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_runs_and_reports_what_it_measured(tmp_path):
    env = dict(os.environ, EHFT_DEMO_OUT=str(tmp_path), EHFT_DEMO_UPDATES="4",
               EHFT_DEMO_METHODS="ft lp-ft ehft-bitfit", EHFT_DEMO_STAGE1_EPOCHS="0.25",
               EHFT_DEMO_STAGE1_PATIENCE="1")
    result = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    summary = json.loads((tmp_path / "results.json").read_text())
    for method in ("ft", "lp-ft", "ehft-bitfit"):
        cell = summary["cb"][method]
        assert cell["seeds"] == 1
        # the printed table carries the measured number, not a typed-in one
        assert "| %s | %.2f ±— (1) |" % (method, cell["mean"]) in out
    assert (tmp_path / "results-curves-cb.png").is_file()
    assert (tmp_path / "results-bars.png").is_file()
    assert "stage2: update 4 of 4" in out  # progress shows where each run ended
    assert "stage1: update 8 of at most 8" in out  # a quarter of CB's 32 batches of 8
    # stage 1's best dev next to the linear probe's and the constant level, as recorded
    runs = next(tmp_path.glob("runs-*")) / "cb"
    heads = {m: json.loads((runs / m / "seed1" / "stage1" / "done.json").read_text())["head"]
             for m in ("lp-ft", "ehft-bitfit")}
    line = next(x for x in out.splitlines() if x.strip().startswith("ehft-bitfit  seed 1:"))
    assert ("best dev %s %.2f after 8 updates (linear probe: %.2f; always one class: %.2f)"
            % (heads["ehft-bitfit"]["metric"], heads["ehft-bitfit"]["best_dev"],
               heads["lp-ft"]["best_dev"], heads["ehft-bitfit"]["constant_level"])) in line
    # a second run with the same settings reuses the finished runs
    again = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("(finished before: reused)") == 3
