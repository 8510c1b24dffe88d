"""The benchmark scripts run and write what they measured, with how they were run (the
numbers themselves are for benchmarks/results/, not for tests): the step benchmarks, the
accuracy grid and the diagnostics; the speed benchmarks are in test_speed_benchmarks.py."""

import argparse
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, benchmark_script, load_benchmark, prepare_rte


@pytest.mark.slow
def test_optimizer_step_benchmark_records_every_kernel(tmp_path):
    benchmark_script("optimizer_step.py", "--shapes", "minilm", "--steps", "1",
                     "--out", tmp_path / "o")
    record = json.loads((tmp_path / "o.json").read_text())
    assert record["command"].startswith("python ") and record["torch"] == torch.__version__
    assert [r["optimizer"] for r in record["results"]] == [
        "fairseq adam", "ehft_adamw loop", "ehft_adamw foreach", "ehft_adamw fused"]
    assert all(r["median_ms"] > 0 and r["parameters"] > 22e6 for r in record["results"])
    assert "| minilm | 22.7M in 104 tensors | fairseq adam |" in (tmp_path / "o.md").read_text()


@pytest.mark.slow
def test_train_step_benchmark_measures_each_plan(tmp_path):
    data = prepare_rte(tmp_path, rows=64)
    benchmark_script("train_step.py", "--device", "cpu", "--shape", "tiny", "--peft", "full",
                     "bitfit", "--steps", "2", "--warmup", "1", "--batch-size", "16",
                     "--data", data, "--profile", "2", "--out", tmp_path / "t")
    full, bitfit = json.loads((tmp_path / "t.json").read_text())["results"]
    for row in (full, bitfit):
        assert row["precision"] == "float32" and row["steps"] == len(row["step_ms"]) == 2
        assert row["sequences_per_s"] > 0 and 0 < row["mfu"] < 1
        assert row["tokens_per_s"] < row["padded_tokens_per_s"]  # padding is not counted
        # the profiled steps: where the time went, by fairseq's own phases and by operator
        profile = row["profile"]
        assert profile["steps"] == 2 and profile["clock"] == "cpu"
        assert 0 < profile["busy_ms_per_step"] <= profile["wall_ms_per_step"]
        assert {"forward", "backward", "optimizer"} <= set(profile["phases"])
        assert profile["top"][0]["ms_per_step"] >= profile["top"][-1]["ms_per_step"] > 0
        assert all(op["op"] not in profile["phases"] for op in profile["top"])
    assert bitfit["trainable_parameters"] < full["trainable_parameters"]
    text = (tmp_path / "t.md").read_text()
    assert "## Profile: fp32, --peft bitfit (2 steps under torch.profiler)" in text
    assert "| fairseq phase | host ms a step |" in text and "| `aten::" in text


def test_a_gpu_profile_says_how_much_of_a_step_the_gpu_was_busy():
    train_step = load_benchmark("train_step")
    profile = {"steps": 3, "clock": "device", "wall_ms_per_step": 250.0, "busy_ms_per_step": 25.0,
               "busy_share": 0.1, "phases": {"forward": 40.0, "optimizer": 120.0},
               "top": [{"op": "aten::mm", "calls_per_step": 96, "ms_per_step": 12.5,
                        "share_of_busy": 0.5}]}
    lines = train_step._profiles([{"precision_flag": "fp16", "peft": "full",
                                   "profile": profile}])
    assert ("Wall 250.0 ms a step, of which GPU kernels were busy 25.0 ms (10%); for the rest of "
            "the step the GPU ran nothing, waiting on the host." in lines)
    assert "| optimizer | 120.0 |" in lines and "| `aten::mm` | 96 | 12.50 | 50% |" in lines


@pytest.mark.slow
def test_the_gpu_benchmark_says_it_was_skipped_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        return  # it runs for real on a GPU
    out = benchmark_script("train_step.py", "--device", "cuda", "--out", tmp_path / "g")
    assert "skipped, no CUDA device" in out and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_accuracy_grid_records_cells_skips_finished_ones_and_reports(tmp_path):
    args = ["--tasks", "cb", "--methods", "ft", "ehft-bitfit", "--seeds", "1", "--updates", "4",
            "--out", tmp_path / "accuracy", "--json", tmp_path / "accuracy.json",
            "--work", tmp_path / "work", "--device", "cpu", "--jobs", "2"]
    out = benchmark_script("accuracy_grid.py", *args)
    assert "grid: 2 of 2 cells to run on cpu, 2 at a time" in out
    record = tmp_path / "accuracy" / "runs" / "cb" / "ehft-bitfit" / "seed1"
    kept = sorted(str(p.relative_to(record)) for p in record.rglob("*") if p.is_file())
    # no checkpoints; the machine it trained on, which done.json does not say
    assert kept == ["machine.json", "run.json", "stage1/done.json", "stage2/done.json"]
    machine = json.loads((record / "machine.json").read_text())
    assert machine["cells_side_by_side"] == 2 and machine["cores"] == os.cpu_count()
    if os.path.isfile("/proc/cpuinfo"):
        assert machine["cpu"]
    summary = json.loads((tmp_path / "accuracy.json").read_text())
    assert set(summary["cb"]) == {"ft", "ehft-bitfit"}
    assert summary["cb"]["ft"]["seeds"] == 1 and "avg" in summary
    assert "| ehft-bitfit |" in (tmp_path / "accuracy" / "results.md").read_text()
    last = (tmp_path / "accuracy" / "results-last.md").read_text()  # the final validations
    assert "select=last" in last and "| ehft-bitfit |" in last
    assert not list((tmp_path / "accuracy").glob("results-last-*.png"))
    # all finished
    assert "grid: 0 of 2 cells to run" in benchmark_script("accuracy_grid.py", *args)

    # the same cell with fairseq's random batches, beside the length-grouped one
    out = benchmark_script("accuracy_grid.py", "--tasks", "cb", "--methods", "ft", "--seeds",
                           "1", "--updates", "4", "--batch-order", "random",
                           "--out", tmp_path / "random",
                           "--compare-with", tmp_path / "accuracy" / "results.json",
                           "--work", tmp_path / "work", "--device", "cpu")
    assert "random batches" in out and not (tmp_path / "random" / "accuracy.json").exists()
    run = json.loads((tmp_path / "random" / "runs" / "cb" / "ft" / "seed1" / "run.json")
                     .read_text())
    assert run["commands"]["finetune"][-2:] == ["--batch-order", "random"]
    assert "| cb | ft | " in (tmp_path / "random" / "comparison.md").read_text()


def test_the_batch_order_comparison_tests_the_difference_over_seeds(tmp_path):
    grid = load_benchmark("accuracy_grid")
    cell = {"mean": 80.0, "std": 1.0, "seeds": 4, "metric": "accuracy"}
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "results.json").write_text(json.dumps(
        {"mrpc": {"ft": dict(cell, mean=70.0)}, "cb": {"ft": dict(cell, seeds=1, std=None)},
         "avg": {"ft": 75.0}}))
    (tmp_path / "length.json").write_text(json.dumps(
        {"mrpc": {"ft": cell, "lora": cell}, "cb": {"ft": cell}}))
    grid.compare(argparse.Namespace(out=str(tmp_path / "random"),
                                    compare_with=str(tmp_path / "length.json")))
    rows = (tmp_path / "random" / "comparison.md").read_text().splitlines()
    assert "| cb | ft | 80.00 ± 1.00 (n=4) | 80.00 ± - (n=1) | +0.00 | n/a |" in rows
    assert "| mrpc | ft | 80.00 ± 1.00 (n=4) | 70.00 ± 1.00 (n=4) | -10.00 | 0.00 |" in rows
    assert not [r for r in rows if "lora" in r or "avg" in r]  # only cells both grids have


@pytest.mark.slow
def test_accuracy_grid_reports_a_failed_cell_and_refuses_bad_flags(tmp_path):
    def grid(*args):
        return subprocess.run([sys.executable, "-m", "benchmarks.accuracy_grid",
                               "--tasks", "cb", "--seeds", "1", "--device", "cpu",
                               "--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json"),
                               "--work", str(tmp_path / "w"), *args],
                              capture_output=True, text=True, cwd=REPO, timeout=600)
    failed = grid("--methods", "no-such-method", "--updates", "4")
    assert failed.returncode == 1
    assert "grid: cb no-such-method seed 1 failed" in failed.stdout
    assert "grid: 1 cells failed" in failed.stderr
    assert not (tmp_path / "a" / "runs").exists()
    assert [p.name for p in (tmp_path / "w").iterdir()] == [".cb-no-such-method-1-length.lock"]

    # a cell another grid is training is left to it: its files are not touched
    from ehft_plugin.train.locks import exclusive

    other = tmp_path / "w" / "cb-ft-1-length"
    with exclusive(other, "accuracy grid"):
        (other / "checkpoint_last.pt").parent.mkdir()
        (other / "checkpoint_last.pt").write_text("the other grid's")
        busy = grid("--methods", "ft", "--updates", "4")
    assert busy.returncode == 1
    assert "grid: cb ft seed 1: %s is in use by another accuracy grid" % other in busy.stdout
    assert (other / "checkpoint_last.pt").read_text() == "the other grid's"
    assert not (tmp_path / "a" / "runs").exists()

    refused = grid("--jobs", "0")
    assert refused.returncode == 2 and "--jobs must be at least 1, got 0" in refused.stderr


@pytest.mark.slow
def test_diagnostics_benchmark_trains_the_runs_and_analyzes_them(tmp_path):
    args = ["--task", "cb", "--methods", "ft", "ehft-bitfit", "--shares", "0.5", "--updates", "10",
            "--examples", "8", "--grad-batches", "1", "--work", tmp_path / "runs",
            "--out", tmp_path / "d"]
    out = benchmark_script("diagnostics.py", *args)
    assert "diagnostics: ehft-bitfit seed 1 (stage 1 share 0.5)" in out
    folder = tmp_path / "d" / "cb"
    how = json.loads((folder / "how.json").read_text())
    assert how["command"].startswith("python ") and "--shares 0.5" in how["command"]
    if os.path.isfile("/proc/cpuinfo"):  # the machine kind, which sets speed and rounding
        assert how["cpu"]
    assert {c["method"] for c in how["runs"].values()} == {"ft", "ehft-bitfit"}
    assert all(c["total_updates"] == 10 for c in how["runs"].values())
    analysis = json.loads((folder / "analysis.json").read_text())
    assert analysis["settings"]["examples"] == 8 and analysis["settings"]["grad_batches"] == 1
    drift = analysis["feature_drift"]["cb"]["methods"]
    assert set(drift) == {"ft", "ehft-bitfit (stage 1 10%)", "ehft-bitfit (stage 1 50%)"}
    assert all(d["mean"] > 0 for d in drift.values())  # every method moved the backbone
    assert set(analysis["share_ablation"]["cb"]["methods"]["ehft-bitfit"]) == {"0.1", "0.5"}
    assert {"feature_drift.png", "parameter_drift-cb.png"} <= {p.name for p in folder.iterdir()}
