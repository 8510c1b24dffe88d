"""benchmarks/stage1_grid.py: the probe picks each stage-1 rate before the grid starts, the
grid runs its declared methods and seeds with the default stage 1, and the probe's report
answers its question from the records."""

import argparse
import os

import pytest
from conftest import load_benchmark
from test_converged_grid import fake_record


@pytest.fixture
def stage1(tmp_path, monkeypatch):
    module = load_benchmark("stage1_grid")
    monkeypatch.setattr(module, "PROBE", str(tmp_path / "probe"))
    monkeypatch.setattr(module, "OUT", str(tmp_path / "grid"))
    return module


def _probe(stage1, task, method, lr, values):
    for seed, value in zip(stage1.PROBE_SEEDS, values):
        fake_record(stage1.probe_dir(lr), task, method, seed, [50.0, value], 100)


def test_each_stage1_rate_is_the_probes_rate_with_the_higher_mean(stage1):
    _probe(stage1, "cb", "bitfit", 5e-4, (70.0, 72.0))  # mean 71
    _probe(stage1, "cb", "bitfit", 2e-3, (75.0, 69.0))  # mean 72: chosen
    _probe(stage1, "cb", "lp", 5e-4, (74.0, 76.0))  # mean 75: chosen
    assert stage1.stage1_rates() == {"cb": {"bitfit": 2e-3}}  # lp waits for its second rate
    _probe(stage1, "cb", "lp", 2e-3, (60.0, 64.0))
    assert stage1.stage1_rates() == {"cb": {"bitfit": 2e-3, "lp": 5e-4}}
    text = stage1.probe_report()
    assert "| CB | bitfit | 70.00, 72.00 → 71.00 | 75.00, 69.00 → 72.00 | 0.002 | 100 |" in text
    assert "at most 40 epochs on CB, 40 epochs on COPA, 20 epochs on RTE" in text
    assert "- CB: BitFit at its best rate does not beat LP at its best rate by 3.00 points " \
           "(72.00 against 75.00)." in text


def test_the_grid_waits_for_the_probe(stage1, monkeypatch):
    monkeypatch.setattr(stage1.converged, "rates_for", lambda tasks: {t: 5e-5 for t in tasks})
    args = argparse.Namespace(tasks=["cb"], methods=list(stage1.SEEDS), jobs=1, hours=0)
    with pytest.raises(SystemExit, match="the probe has not chosen a stage-1 rate for cb"):
        stage1.run_grid(args)
    assert not os.path.exists(stage1.OUT)


def test_the_grid_has_its_declared_cells_and_flags(stage1):
    args = argparse.Namespace(tasks=["cb", "rte"], methods=list(stage1.SEEDS))
    cells = stage1.grid_cells(args)
    count = {(t, m): sum(1 for c in cells if c[:2] == (t, m)) for t, m, _ in cells}
    assert count["cb", "ehft-bitfit"] == count["cb", "lp-ft"] == 8
    assert count["rte", "ehft-bitfit"] == count["rte", "lp-ft"] == 4
    assert count["cb", stage1.LORA] == count["rte", stage1.MIXOUT] == count["cb", stage1.CHILD] \
        == 4
    assert ("cb", "ft") not in count  # FT's cells are the converged grid's
    flags = stage1.grid_flags({"cb": {"bitfit": 2e-3, "lp": 5e-4}})
    assert flags("cb", "ehft-bitfit") == (["--lr-stage1", 2e-3], [])  # the default stage 1
    assert flags("cb", "lp-ft") == (["--lr-stage1", 5e-4], [])
    own, fairseq = flags("cb", stage1.MIXOUT)
    assert own == [] and "--mixout-head" in fairseq and fairseq[fairseq.index("--dropout") + 1] \
        == "0"
    assert stage1.diagnosed("rte", "lp-ft", 3) and not stage1.diagnosed("copa", "lp-ft", 1)


def test_the_head_init_report_compares_each_method_with_its_default_seeds(stage1, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(stage1, "HEAD_INIT", str(tmp_path / "head-init"))
    monkeypatch.setattr(stage1.converged, "OUT", str(tmp_path / "converged"))
    for seed, (default, small) in enumerate([(70, 72), (72, 76), (74, 74), (76, 78)], 1):
        fake_record(stage1.converged.OUT, "cb", "ft", seed, [50.0, default], 100)
        fake_record(stage1.HEAD_INIT, "cb", "ft", seed, [50.0, small], 100)
    for seed in range(1, 4):  # EH-FT(BitFit) with the small init: seed 4 still to run
        fake_record(stage1.OUT, "cb", "ehft-bitfit", seed, [60.0], 100)
        fake_record(stage1.HEAD_INIT, "cb", "ehft-bitfit", seed, [61.0], 100)
    fake_record(stage1.OUT, "cb", "ehft-bitfit", 4, [60.0], 100)
    text = stage1.head_init_report()
    # default 73.00 ± 2.58, N(0, 0.005) 75.00 ± 2.58: +2.00, t 1.10 on 6 df
    assert "| ft | 73.00 ± 2.58 | 75.00 ± 2.58 | +2.00 | p 0.32 |" in text
    assert "| ehft-bitfit | waits for 1 of 8 runs |" in text


def test_the_probe_report_shows_the_seeds_finished_so_far(stage1):
    _probe(stage1, "rte", "bitfit", 5e-4, (51.0, 53.0))
    fake_record(stage1.probe_dir(2e-3), "rte", "bitfit", 1, [50.0, 54.0], 100)  # seed 2 to run
    text = stage1.probe_report()
    assert "| RTE | bitfit | 51.00, 53.00 → 52.00 | 54.00, — | — | 100 |" in text
    assert "| RTE | lp | — | — | — | — |" in text
    assert stage1.stage1_rates() == {}  # no rate is chosen from part of the seeds


def test_a_task_is_complete_when_every_declared_cell_has_finished(stage1, monkeypatch):
    cells = stage1.grid_cells(argparse.Namespace(tasks=["rte"], methods=list(stage1.SEEDS)))
    assert len(cells) == 4 + 4 + 3 * 4  # EH-FT(BitFit) and LP-FT 4 seeds, the others 4
    finished = set(cells[:-1])
    monkeypatch.setattr(stage1.grid, "finished", lambda *cell: cell[:3] in finished)
    assert not stage1.complete("rte")
    finished.add(cells[-1])
    assert stage1.complete("rte")


def test_the_results_hold_the_complete_tasks_once_one_is(stage1, monkeypatch):
    """A task still running would leave every method's Avg and verdict out."""
    reports = []
    monkeypatch.setattr(stage1.grid, "ehft_report", lambda *args: reports.append(args))
    monkeypatch.setattr(stage1, "HEAD_INIT", os.path.join(stage1.OUT, "no-head-init"))
    for task in ("cb", "rte"):
        os.makedirs(os.path.join(stage1.OUT, "runs", task))

    def roots():
        reports.clear()
        stage1.report(None)
        return {os.path.relpath(a, os.path.dirname(stage1.converged.OUT))
                if a.startswith(stage1.converged.OUT) else os.path.relpath(a, stage1.OUT)
                for a in reports[0][:reports[0].index("--out")]}

    monkeypatch.setattr(stage1, "complete", lambda task: False)  # none yet: what has run
    assert roots() == {"runs/cb", "runs/rte", "accuracy-converged/runs/cb/ft",
                       "accuracy-converged/runs/rte/ft"}
    monkeypatch.setattr(stage1, "complete", lambda task: task == "cb")
    assert roots() == {"runs/cb", "accuracy-converged/runs/cb/ft"}


def _kept(stage1, monkeypatch, tmp_path):
    """The diagnosed cells' homes in a scratch .cache; the copies under OUT/kept."""
    monkeypatch.setattr(stage1, "KEPT", str(tmp_path / "cache" / "stage1-kept"))
    monkeypatch.setattr(stage1.converged, "KEPT", str(tmp_path / "cache" / "converged-kept"))
    monkeypatch.setattr(stage1, "SMALL", os.path.join(stage1.OUT, "kept"))
    return [(os.path.relpath(whole, tmp_path), os.path.relpath(small, stage1.OUT))
            for whole, small in stage1.kept_cells("rte")]


def test_keep_measures_each_kept_cell_and_copies_it_without_checkpoints_or_heads(
        stage1, monkeypatch, tmp_path):
    cells = _kept(stage1, monkeypatch, tmp_path)
    assert cells[:3] == [("cache/converged-kept/rte-ft-1-length", "kept/rte-ft-1-length"),
                         ("cache/stage1-kept/rte-lp-ft-1-length", "kept/rte-lp-ft-1-length"),
                         ("cache/stage1-kept/rte-ehft-bitfit-1-length",
                          "kept/rte-ehft-bitfit-1-length")] and len(cells) == 9
    run = tmp_path / cells[2][0] / "rte" / "ehft-bitfit" / "seed1"
    for path in ("run.json", "stage1/head.safetensors", "stage1/train.log", "stage1/fairseq.out",
                 "stage2/checkpoint_last.pt", "stage2/done.json", "measured.json",
                 "../.seed1.lock"):
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("x")
    analyses = []
    monkeypatch.setattr(stage1.subprocess, "run", lambda cmd, **kw: analyses.append(cmd))
    stage1.keep(argparse.Namespace(tasks=["rte", "copa"], device="cpu"))
    [cmd] = analyses  # the one cell kept here; copa is not diagnosed
    assert cmd[cmd.index("analyze") + 1] == str(tmp_path / cells[2][0])
    assert cmd[cmd.index("--only") + 1] == "feature_drift,heads"
    assert cmd[cmd.index("--examples") + 1] == "512"
    copy = os.path.join(stage1.OUT, cells[2][1])
    assert sorted(os.path.relpath(os.path.join(d, f), copy) for d, _, files in os.walk(copy)
                  for f in files) == [
        "rte/ehft-bitfit/seed1/measured.json", "rte/ehft-bitfit/seed1/run.json",
        "rte/ehft-bitfit/seed1/stage1/train.log", "rte/ehft-bitfit/seed1/stage2/done.json"]
    stage1.keep(argparse.Namespace(tasks=["rte"], device="cpu"))
    assert len(analyses) == 1  # copied once


def test_diagnostics_take_a_cell_whole_where_it_is_kept_else_its_copy(stage1, monkeypatch,
                                                                      tmp_path, capsys):
    cells = _kept(stage1, monkeypatch, tmp_path)
    analysed = []
    monkeypatch.setattr(stage1.converged, "analyze", lambda dirs, *a: analysed.append(dirs))
    for whole, small in cells[:-1]:
        os.makedirs(os.path.join(stage1.OUT, small))
    os.makedirs(tmp_path / cells[0][0])  # FT seed 1 kept whole in this checkout too
    stage1.diagnostics(argparse.Namespace(tasks=["rte"], device="cpu"))
    assert "rte diagnostics wait for 1 kept cells: %s" % os.path.join(
        stage1.OUT, cells[-1][1]) in capsys.readouterr().out and not analysed
    os.makedirs(tmp_path / cells[-1][0])
    stage1.diagnostics(argparse.Namespace(tasks=["rte"], device="cpu"))
    assert analysed == [[str(tmp_path / cells[0][0])]
                        + [os.path.join(stage1.OUT, small) for _, small in cells[1:-1]]
                        + [str(tmp_path / cells[-1][0])]]
