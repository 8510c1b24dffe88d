"""The benchmark scripts run and write what they measured, with how they were run (the
numbers themselves are for benchmarks/results/, not for tests)."""

import json
import subprocess
import sys

import torch
from conftest import REPO, prepare_rte


def _script(name, *args):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *map(str, args)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_optimizer_step_benchmark_records_every_kernel(tmp_path):
    _script("optimizer_step.py", "--shapes", "minilm", "--steps", "1", "--out", tmp_path / "o")
    record = json.loads((tmp_path / "o.json").read_text())
    assert record["command"].startswith("python ") and record["torch"] == torch.__version__
    assert [r["optimizer"] for r in record["results"]] == [
        "fairseq adam", "ehft_adamw loop", "ehft_adamw foreach", "ehft_adamw fused"]
    assert all(r["median_ms"] > 0 and r["parameters"] > 22e6 for r in record["results"])
    assert "| minilm | 22.7M in 104 tensors | fairseq adam |" in (tmp_path / "o.md").read_text()


def test_train_step_benchmark_measures_each_plan(tmp_path):
    data = prepare_rte(tmp_path, rows=64)
    _script("train_step.py", "--device", "cpu", "--shape", "tiny", "--peft", "full", "bitfit",
            "--steps", "2", "--warmup", "1", "--batch-size", "16", "--data", data,
            "--out", tmp_path / "t")
    full, bitfit = json.loads((tmp_path / "t.json").read_text())["results"]
    for row in (full, bitfit):
        assert row["precision"] == "float32" and row["steps"] == 2
        assert row["sequences_per_s"] > 0 and 0 < row["mfu"] < 1
        assert row["tokens_per_s"] < row["padded_tokens_per_s"]  # padding is not counted
    assert bitfit["trainable_parameters"] < full["trainable_parameters"]


def test_the_gpu_benchmark_says_it_was_skipped_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        return  # it runs for real on a GPU
    out = _script("train_step.py", "--device", "cuda", "--out", tmp_path / "g")
    assert "skipped, no CUDA device" in out and not list(tmp_path.iterdir())
