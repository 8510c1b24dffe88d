"""The speed benchmarks (benchmarks/speed.py, speed_report.py, speed_cuda.py) run and write
every ratio with how it was measured; their statistics (intervals over rounds, targets) on
made-up rounds. The numbers themselves are for benchmarks/RESULTS.md, not for tests."""

import json
import math
import statistics
import sys

import pytest
import torch
from conftest import benchmark_script, load_benchmark

from ehft_plugin.train.rundir import write_done


@pytest.mark.slow
def test_speed_benchmark_writes_every_ratio_with_its_figures(tmp_path, monkeypatch, capsys):
    tiny = ["--steps", "1", "--warmup", "0", "--batch-size", "8", "--wall-updates", "4",
            "--child-examples", "16", "--out", tmp_path]
    benchmark_script("speed.py", *tiny, "--rounds", "1")  # one real round: every process measured
    one = json.loads((tmp_path / "results.json").read_text())
    assert one["bitfit_vs_ft"]["ci95"] is None and one["bitfit_vs_ft"]["met"] is None
    assert "unresolved" in (tmp_path / "RESULTS.md").read_text()  # one round settles nothing
    first = json.loads((tmp_path / "results" / "speed.json").read_text())

    # A second slice adds a round to the saved one: the interval needs two. Its processes
    # answer with the first round's rows, 10% faster, so that what is tested here is the
    # slice's own logic (resume, order, intervals, files); the measuring ran above.
    speed = load_benchmark("speed")
    rows = {m["command"]: m for m in first["rounds"][0]["measurements"].values()}
    ran = []

    def replay(cmd, **kwargs):
        cmd = [str(c) for c in cmd]
        if cmd[1] == "child-mask":
            return json.dumps({"examples": 16})
        row = dict(rows[speed.relative_command(cmd)])
        ran.append(row.pop("command"))
        row.update(sequences_per_s=row["sequences_per_s"] * 1.1,
                   tokens_per_s=row["tokens_per_s"] * 1.1)
        return json.dumps(row)

    walls = first["rounds"][0]["walls"]
    monkeypatch.setattr(speed, "sh", replay)
    monkeypatch.setattr(speed, "ehft_wall", lambda args, data, method: (
        walls[method] * 0.9, first["rounds"][0]["wall_stages"][method]))
    # the first slice's thread count (another test in this process may have set its own)
    monkeypatch.setattr(torch, "get_num_threads", lambda: first["run"]["threads"])
    monkeypatch.setattr(sys, "argv", ["speed", *map(str, tiny), "--rounds", "2", "--resume"])
    speed.main()
    out = capsys.readouterr().out
    results = json.loads((tmp_path / "results.json").read_text())
    for key in ("stage2_vs_fairseq", "bitfit_vs_ft", "lora_vs_ft", "prefix_vs_ft", "ft_vs_hf",
                "bitfit_vs_hf", "lora_vs_hf", "default_pipeline_vs_hf", "mfu",
                "ft_vs_ehft_wall"):
        entry = results[key]
        assert entry["value"] > 0 and len(entry["per_round"]) == 2, key
        low, high = entry["ci95"]
        assert low <= entry["value"] <= high, key
        assert entry["met"] is (True if low >= entry["target"] else
                                False if high < entry["target"] else None), key
    assert results["run"]["same_batches"] is True  # plugin, stock fairseq and HF: same batches
    assert results["run"]["rounds"] == 2 and len(results["run"]["slices"]) == 2
    # the paper's other baselines: speed and memory beside FT, and the Fisher pass's cost
    for key in ("mixout_vs_ft", "child_tuning_vs_ft"):
        assert results[key]["value"] > 0 and results[key]["peak_memory_mb"] > 0, key
    assert results["run"]["slices"][0]["child_mask"]["examples"] == 16  # the real Fisher pass
    assert results["ft_vs_hf"]["numerator"] > 0 and results["ft_vs_hf"]["denominator"] > 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Made by `python -m benchmarks.speed --steps 1" in text and "--resume` (1 round" in text
    assert "stock fairseq ft (sentence_prediction)" in text and "hf lora" in text
    speed_json = json.loads((tmp_path / "results" / "speed.json").read_text())
    assert [len(r["measurements"]) for r in speed_json["rounds"]] == [12, 12]
    # the second round ran in the reverse order
    orders = [list(r["measurements"]) for r in speed_json["rounds"]]
    assert orders[1] == orders[0][::-1]
    assert ran == [speed_json["rounds"][0]["measurements"][name]["command"]
                   for name in orders[1]]
    assert 0 <= results["run"]["other_cpu_share"] <= 1  # how quiet the machine was is recorded
    assert "of the machine's CPU while it was measured" in text
    assert "speed: wrote" in out
    assert "plus its Fisher pass before training" in text and "| `mixout_vs_ft` |" in text
    assert "of 2 rounds above)" in text
    # where the end-to-end seconds went, stage by stage, from each stage's done.json
    where = results["ft_vs_ehft_wall"]["where"]
    assert list(where["ft"]["stages"]) == ["finetune"]
    assert list(where["ehft-bitfit"]["stages"]) == ["stage1", "stage2"]
    assert where["ehft-bitfit"]["stages"]["stage1"]["fairseq_train"] > 0
    assert "| ehft-bitfit | stage1 |" in text and "| ft | `ehft train` itself |" in text
    # speed_report rewrites both files from speed.json alone, to the same figures
    (tmp_path / "results.json").unlink()
    (tmp_path / "RESULTS.md").unlink()
    benchmark_script("speed_report.py", tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert (tmp_path / "RESULTS.md").read_text() == text
    # rounds of other settings are not pooled: a resume that changes one is refused
    monkeypatch.setattr(sys, "argv", ["speed", *map(str, tiny), "--steps", "2", "--rounds",
                                      "3", "--resume"])
    with pytest.raises(SystemExit) as refused:
        speed.main()
    assert str(refused.value).startswith("speed: --resume: ")
    assert "steps=1, this run has 2" in str(refused.value)
    assert json.loads((tmp_path / "results.json").read_text()) == results  # left as it was


def test_speed_run_counts_only_the_busy_fields_of_proc_stat():
    speed = load_benchmark("speed")
    hz = speed.os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = "cpu  100 20 30 5000 70 1 2 3 0 0\ncpu0 50 10 15 2500 35 0 1 1 0 0\n"
    assert speed.busy_cpu_seconds(stat) == (100 + 20 + 30 + 1 + 2 + 3) / hz
    try:
        speed.busy_cpu_seconds("intr 1 2 3\n")
    except ValueError as error:
        assert "not a /proc/stat text" in str(error)
    else:
        raise AssertionError("a text without the cpu line was accepted")


def test_the_other_processes_share_stays_a_share_over_a_short_wall():
    speed = load_benchmark("speed")
    load = speed.OtherLoad()
    if load.start is None:
        pytest.skip("no /proc/stat here")
    busy, own, wall = load.start
    load.start = (busy - 5.0, own, wall - 0.001)  # clock-tick rounding over a millisecond
    assert load.share() == 1.0


def test_speed_report_counts_the_rounds_that_clear_a_target():
    report = load_benchmark("speed_report")
    entry = {"value": 1.02, "target": 1.0, "met": None, "per_round": [0.95, 1.02, 1.10]}
    assert report.verdict(entry) == "unresolved (2 of 3 rounds above)"
    entry.update(value=0.97, met=False, per_round=[0.9, 0.97, 0.99])
    assert report.verdict(entry) == "**missed** (0 of 3 rounds above)"
    assert report.verdict({"value": 0.6, "target": 0.5, "met": True}) == "yes"  # one figure
    assert report.verdict({"value": 1.0}) == "—"  # no target


def test_a_target_is_settled_only_by_the_interval_over_rounds():
    report = load_benchmark("speed_report")
    assert report.settle([1.31, 1.5], 1.3) is True  # the lower end clears it
    assert report.settle([1.3, 1.5], 1.3) is True  # exactly on it counts
    assert report.settle([1.1, 1.29], 1.3) is False  # the upper end is below it
    assert report.settle([1.2, 1.4], 1.3) is None  # the rounds cannot tell
    assert report.settle(None, 1.3) is None  # one round: no interval


def test_a_ratio_over_rounds_has_a_t_interval_on_its_logarithms():
    from scipy import stats

    report = load_benchmark("speed_report")
    per_round = [1.10, 1.14, 1.12, 1.15]
    entry = report.figure(per_round, 1.3, of="sequences_per_s")
    logs = [math.log(v) for v in per_round]
    low, high = stats.t.interval(0.95, len(logs) - 1, loc=statistics.mean(logs),
                                 scale=stats.sem(logs))
    assert entry["value"] == pytest.approx(statistics.geometric_mean(per_round))
    assert entry["ci95"] == pytest.approx([math.exp(low), math.exp(high)])
    assert entry["met"] is False and entry["of"] == "sequences_per_s"  # 1.3 is above it all
    assert report.figure([1.2], 1.0)["ci95"] is None  # one round


def test_the_wall_time_is_split_by_stage_and_the_launcher_gets_the_rest(tmp_path):
    speed, report = load_benchmark("speed"), load_benchmark("speed_report")
    for stage, seconds in (("stage1", {"start_checkpoint": 1.0, "fairseq_train": 20.0,
                                       "training": 12.0, "hand_over": 0.5}),
                           ("stage2", {"start_checkpoint": 1.5, "fairseq_train": 60.0,
                                       "training": 50.0})):
        (tmp_path / stage).mkdir()
        write_done(tmp_path / stage, 10, "accuracy", [], software={}, seconds=seconds)
    where = speed.stage_seconds(str(tmp_path), 90.0)
    assert list(where["stages"]) == ["stage1", "stage2"]
    assert where["launcher"] == 90.0 - (1.0 + 20.0 + 0.5 + 1.5 + 60.0)  # loop is in the process
    table = "\n".join(report.wall_table({"ehft-bitfit": where}))
    assert "| ehft-bitfit | stage1 | 1.0 | 20.0 | 12.0 | 8.0 | 0.5 |" in table
    assert "| ehft-bitfit | stage2 | 1.5 | 60.0 | 50.0 | 10.0 | — |" in table
    assert "| ehft-bitfit | `ehft train` itself | — | — | — | 7.0 | — |" in table
    assert report.wall_table(None) == []  # measured before stages recorded their timings


def test_a_figure_exactly_on_its_target_meets_it():
    report = load_benchmark("speed_report")
    wall_target = 1 / 1.05  # FT wall / EH-FT wall: EH-FT may take up to 5% longer
    assert report.meets(100.0 / 105.0, wall_target)  # 105 s vs 100 s is exactly 1.05x
    assert not report.meets(100.0 / 105.1, wall_target)
    assert report.meets(1.3, 1.3) and not report.meets(1.2999, 1.3)


def test_speed_report_flags_a_busy_machine():
    report = load_benchmark("speed_report")
    assert "(a quiet machine)" in report.quietness({"other_cpu_share": 0.01})
    busy = report.quietness({"other_cpu_share": 0.42})
    assert "42.0%" in busy and "not quiet" in busy
    assert "not recorded" in report.quietness({})  # runs saved before it was measured


def test_speed_report_explains_a_trainable_count_gap_only_when_it_is_one_dense_layer():
    report = load_benchmark("speed_report")

    def rows(lora, prefix, bitfit):
        counts = {"lora": lora, "prefix": prefix, "bitfit": bitfit}
        table = {"hf %s, random batches" % m: {"trainable_parameters": 1000} for m in counts}
        table.update({"plugin %s, random batches" % m: {"trainable_parameters": 1000 + gap}
                      for m, gap in counts.items()})
        return table

    note = report.trainable_note(rows(16 * 16 + 16, 16 * 16 + 16, -16))
    assert "lora +272, prefix +272, bitfit -16" in note
    assert "16×16 dense layer" in note and "embedding LayerNorm's bias (16)" in note
    note = report.trainable_note(rows(300, 300, 0))  # 300 is no h² + h: stated, not explained
    assert note == "Trainable parameters, plugin minus HF: lora +300, prefix +300, bitfit +0."


@pytest.mark.slow
def test_gpu_side_by_side_runs_every_peer_on_the_same_batches(tmp_path):
    """benchmarks.speed_cuda's code path on the CPU (tiny shape, one precision): stock
    fairseq, the plugin and HF on identical batches, each row with its step-time spread and
    warm-up cost; a target whose configurations did not run is "not measured", not missed."""
    benchmark_script("speed_cuda.py", "--device", "cpu", "--shapes", "tiny", "--settings", "rte",
                     "--precisions", "bf16", "--steps", "2", "--warmup", "1", "--out", tmp_path)
    results = json.loads((tmp_path / "results-cuda.json").read_text())
    assert results["run"]["same_batches"] is True and results["run"]["device"] == "cpu"
    rows = json.loads((tmp_path / "results" / "speed-cuda.json").read_text())["measurements"]
    assert [r["name"] for r in rows] == ["stock fairseq ft", "plugin ft",
                                         "plugin ft, default pipeline", "hf ft"]
    for row in rows:
        assert "error" not in row, row
        assert row["steps"] == 2 and row["warmup_steps"] == 1 and row["warmup_seconds"] > 0
        assert row["median_step_ms"] <= row["p90_step_ms"] <= row["max_step_ms"]
    # ratios are taken in fp16, which this run did not measure
    assert results["ft_vs_hf"] == {"value": None, "why": "a configuration failed or did not run",
                                   "target": 1.0, "met": None, "shape": "tiny"}
    text = (tmp_path / "RESULTS-cuda.md").read_text()
    assert "| ft_vs_hf | — | 1.0 | not measured |" in text
    assert "| tiny | rte | bf16 | hf ft |" in text


def test_mfu_counts_frozen_matmuls_at_four_flops_per_parameter():
    from conftest import tiny_model

    from benchmarks.bench import flops_per_token

    full, bitfit = tiny_model("full"), tiny_model("bitfit")
    lora = tiny_model("0-1:lora(r=2,alpha=4,targets=q)")
    weights = sum(m.weight.numel() for m in full.encoder.sentence_encoder.layers.modules()
                  if isinstance(m, torch.nn.Linear))
    attention = 12 * 2 * 16 * 10  # 12 L d s at 10 tokens
    assert flops_per_token(full, 10) == 6 * weights + attention
    assert flops_per_token(bitfit, 10) == 4 * weights + attention
    lora_params = 2 * 2 * (16 + 16)  # two layers of A (2 x 16) and B (16 x 2)
    assert flops_per_token(lora, 10) == 4 * weights + 6 * lora_params + attention


@pytest.mark.slow
def test_headline_mode_rehearsed_on_cpu(tmp_path):
    """scripts/device_checks.sh headline's measurement (speed_cuda.py --headline) on the CPU,
    tiny shape: every headline configuration, each row on disk as it finishes with the
    updates it really took after a warm-up on its own timed batches, one profiled FT step,
    the ratios from those rows, and few files to bring back."""
    HEADLINE = load_benchmark("speed_cuda").HEADLINE
    benchmark_script("speed_cuda.py", "--headline", "--device", "cpu", "--shapes", "tiny",
                     "--steps", "1", "--out", tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [(r["setting"], r["name"]) for r in rows] == [(s, n) for s, _, n, _, _ in HEADLINE]
    for row in rows:
        assert "error" not in row, row
        assert row["updates"] == row["steps"] == 1 and row["replayed_warmup"] is True
        assert row["warmup_steps"] == 1 and row["precision_flag"] == "bf16"  # fp16 needs CUDA
    assert [r["seconds_since_start"] for r in rows] == sorted(r["seconds_since_start"]
                                                              for r in rows)
    profile = json.loads((tmp_path / "profile-ft.json").read_text())
    assert profile["steps"] == 1 and profile["top"]
    results = json.loads((tmp_path / "results-cuda.json").read_text())
    assert results["run"]["mode"] == "headline" and results["run"]["precision_substituted"]
    for key in ("ft_vs_fairseq", "ft_vs_hf", "bitfit_vs_ft", "lora_vs_ft", "prefix_vs_ft",
                "default_pipeline_vs_hf", "mfu_ft_tokenrich"):
        assert results[key]["value"] > 0, key
    assert len(list(tmp_path.iterdir())) <= 8


@pytest.mark.slow
def test_headline_mode_says_what_its_time_budget_left_out(tmp_path):
    benchmark_script("speed_cuda.py", "--headline", "--device", "cpu", "--shapes", "tiny",
                     "--steps", "1", "--budget-s", "0", "--out", tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["error"].startswith("skipped: the 0 s budget") for r in rows)
    results = json.loads((tmp_path / "results-cuda.json").read_text())
    assert results["ft_vs_hf"]["value"] is None and results["ft_vs_hf"]["met"] is None
    assert "failed: skipped" in (tmp_path / "RESULTS-cuda.md").read_text()
