"""benchmarks.converged_grid: the learning-rate sweep decides FT's rate before the grid
starts, the grid has its declared seeds, and the report shows whether FT has converged."""

import argparse
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, load_benchmark

from ehft_plugin.train.rundir import write_done, write_run_record


converged_report = load_benchmark("converged_report")


@pytest.fixture
def converged(tmp_path, monkeypatch):
    module = load_benchmark("converged_grid")
    monkeypatch.setattr(module, "OUT", str(tmp_path))
    return module


def fake_record(out, task, method, seed, accuracies, updates):
    """A finished one-stage record as accuracy_grid keeps it: run.json and done.json, one
    validation per value, evenly spread over `updates`."""
    run = os.path.join(out, "runs", task, method, "seed%d" % seed)
    os.makedirs(os.path.join(run, "finetune"))
    config = {"method": method, "seed": seed, "updates": [updates],
              "stages": [{"name": "finetune", "peft": "full", "lr": 1e-5}]}
    write_run_record(run, task, config, {})
    step = updates // len(accuracies)
    valid = [{"subset": "valid", "valid_num_updates": str(step * (i + 1)),
              "valid_accuracy": str(a), "valid_acc_macro_f1": str(a)}
             for i, a in enumerate(accuracies)]
    write_done(os.path.join(run, "finetune"), updates, "acc_macro_f1", valid, software={},
               seconds={})


def _args(**kw):
    return argparse.Namespace(**dict(dict(tasks=["cb"], hours=0, jobs=1, device="cpu",
                                          backbone="b", shared="s", work="w", step="sweep"),
                                     **kw))


def test_the_sweep_chooses_the_rate_with_the_highest_mean_best_dev(converged):
    best = {1e-5: (60.0, 64.0), 2e-5: (70.0, 66.0), 5e-5: (71.0, 50.0)}  # means 62, 68, 60.5
    for lr, (a, b) in best.items():
        fake_record(converged.sweep_dir(lr), "cb", "ft", 1, [50.0, a], 320)
        fake_record(converged.sweep_dir(lr), "cb", "ft", 2, [b, 40.0], 320)
    assert converged.sweep(_args()) == []  # every cell finished: nothing trains
    rates = json.load(open(os.path.join(converged.OUT, "sweep", "rates.json")))
    assert rates["cb"]["chosen"] == 2e-5
    assert rates["cb"]["mean_best_dev"] == {"1e-05": 62.0, "2e-05": 68.0, "5e-05": 60.5}
    assert converged.chosen_rates() == {"cb": 2e-5}


@pytest.mark.slow
def test_the_grid_has_its_declared_seeds_and_waits_for_the_sweep(converged, tmp_path):
    cells = converged.grid_cells(_args(tasks=["cb", "rte"], methods=list(converged.SEEDS)))
    count = {m: sum(1 for _, method, _ in cells if method == m) for m in converged.SEEDS}
    assert count == {"ft": 16, "ehft-bitfit": 16, "ehft-lora": 8, "lp-ft": 8,
                     "mixout(p=0.9)": 8, "child-tuning-d(p=0.3)": 8}
    assert [c[2] for c in cells[:12]] == [1] * 12  # seed by seed: a partial grid is balanced
    result = subprocess.run([sys.executable, "-m", "benchmarks.converged_grid",
                             "grid", "--tasks", "cb"], capture_output=True, text=True,
                            env=dict(os.environ, EHFT_CONVERGED_OUT=str(tmp_path)), cwd=REPO)
    assert result.returncode == 1
    assert "no FT learning rate chosen yet for cb; run" in result.stderr


def test_methods_narrows_the_grid_to_their_cells_in_the_same_order(converged):
    every = converged.grid_cells(_args(tasks=["copa"], methods=list(converged.SEEDS)))
    ft = converged.grid_cells(_args(tasks=["copa"], methods=["ft"]))
    assert ft == [c for c in every if c[1] == "ft"] == [("copa", "ft", s) for s in range(1, 9)]


def test_the_convergence_report_shows_ft_over_epochs_and_its_last_slopes(converged):
    # 20 epochs of CB (16 updates each): rising, then flat over the second half
    fake_record(converged.OUT, "cb", "ft", 1, [50, 60, 70, 80, 80, 80, 80, 80, 80, 80], 320)
    fake_record(converged.OUT, "cb", "ft", 2, [52, 62, 72, 82, 82, 82, 82, 82, 82, 82], 320)
    # COPA: every seed still climbing 1 point an epoch (2 per validation), at its own level
    for seed, level in ((1, 50), (2, 55), (3, 53)):
        fake_record(converged.OUT, "copa", "ft", seed, [level + 2 * i for i in range(10)], 500)
    text = converged_report.convergence(converged.OUT, ["cb", "copa"], converged.EPOCHS)
    assert "## cb (2 seeds, 20 epochs)" in text
    assert "| last 5 validations | +0.00 | +0.00 | [+0.00, +0.00] | no rise or fall detected |" \
        in text
    assert "| epoch | 2.0 | 4.0 |" in text and "| dev | 51.00 | 61.00 |" in text
    assert "## copa (3 seeds, 20 epochs)" in text
    assert "| second half (last 5) | +1.00 | +1.00 | [+1.00, +1.00] | still rising |" in text
    # one seed: a slope but no interval
    fake_record(converged.OUT, "rte", "ft", 1, [50, 51, 50, 52, 53, 52, 53, 54, 53, 55], 100)
    assert "| — | one seed: no interval |" in converged_report.convergence(
        converged.OUT, ["rte"], converged.EPOCHS)


def test_each_swept_rate_trains_in_its_own_work_directory_with_the_declared_budget(
        converged, monkeypatch):
    seen = []
    monkeypatch.setattr(converged.grid, "finished", lambda *cell: False)
    monkeypatch.setattr(converged.grid, "run_cell", lambda task, method, seed, a: seen.append(
        (a.work, a.out, a.ft_lr, converged.grid.budget(task, a))))
    monkeypatch.setattr(converged, "budget",
                        lambda task, a, epochs=None: (["--total-epochs", 20], []))
    cells = [("cb", "ft", 1, lr) for lr in converged.SWEEP_LRS]
    assert converged.run_cells(cells, _args(jobs=2), converged.sweep_dir,
                               lambda task, lr: lr) == []
    assert sorted(w for w, _, _, _ in seen) == ["w/lr1e-05", "w/lr2e-05", "w/lr5e-05"]
    assert sorted(lr for _, _, lr, _ in seen) == list(converged.SWEEP_LRS)
    assert all(out == converged.sweep_dir(lr) for _, out, lr, _ in seen)
    assert all(b == (["--total-epochs", 20], []) for _, _, _, b in seen)


def test_the_cost_table_comes_from_the_finished_cells_timings(converged):
    fake_record(converged.sweep_dir(1e-5), "cb", "ft", 1, [50.0], 320)
    done = os.path.join(converged.sweep_dir(1e-5), "runs", "cb", "ft", "seed1", "finetune",
                        "done.json")
    record = json.load(open(done))
    write_done(os.path.dirname(done), record["updates"], record["metric"], record["valid"],
               software={}, seconds={"start_checkpoint": 1.0, "fairseq_train": 539.0,
                                       "training": 500.0})
    text = converged.cost(["cb", "rte"])
    assert "| cb | 20 | 1 | 9.0 | 32 | 4.8 |" in text  # 540 s; training is inside fairseq_train
    assert "| rte | 10 | 0 | — | 32 | — |" in text


@pytest.mark.slow
def test_code_md_names_the_commits_that_trained_the_cells(converged):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    records = [(1, {"git_commit": head, "plugin_code_modified": False}),
               (2, {"git_commit": head, "plugin_code_modified": False}),
               (3, {"git_commit": "f" * 40, "plugin_code_modified": True}),
               (4, None)]  # a record from before software was kept
    for seed, software in records:
        fake_record(converged.OUT, "cb", "ft", seed, [50.0], 320)
        if software:
            done = os.path.join(converged.OUT, "runs", "cb", "ft", "seed%d" % seed, "finetune",
                                "done.json")
            record = json.load(open(done))
            write_done(os.path.dirname(done), record["updates"], record["metric"],
                       record["valid"], software=software, seconds={})
    text = converged_report.code(converged.OUT)
    assert "| %s | 2 | no | none |" % head[:7] in text  # the earliest commit: nothing changed
    assert "| fffffff | 1 | yes | unknown (commit not in this checkout) |" in text
    assert "| — | 1 | — | unknown (no record) |" in text


@pytest.mark.slow
def test_code_md_lists_the_plugin_files_that_differ_between_the_cells_commits(converged):
    touched = subprocess.run(["git", "-C", str(REPO), "log", "--format=%H %ct", "-n", "2",
                              "--", "ehft_plugin/atomic.py"], capture_output=True,
                             text=True).stdout.split("\n")
    if len([t for t in touched if t]) < 2:
        pytest.skip("a clone with two commits that changed ehft_plugin/atomic.py")
    newer, older = [t.split()[0] for t in touched[:2]]
    for seed, commit in ((1, older), (2, newer)):
        fake_record(converged.OUT, "cb", "ft", seed, [50.0], 320)
        done = os.path.join(converged.OUT, "runs", "cb", "ft", "seed%d" % seed, "finetune",
                            "done.json")
        record = json.load(open(done))
        write_done(os.path.dirname(done), record["updates"], record["metric"], record["valid"],
                   software={"git_commit": commit, "plugin_code_modified": False},
                   seconds={})
    rows = [line for line in converged_report.code(converged.OUT).splitlines()
            if line.startswith("| ")][1:]
    assert rows[0].startswith("| %s | 1 | no | none |" % older[:7])  # earliest first
    assert rows[1].startswith("| %s | 1 | no | " % newer[:7])
    assert "ehft_plugin/atomic.py" in rows[1]


def test_diagnosed_cells_are_kept_for_analysis_and_the_others_are_not(converged, monkeypatch):
    seen = {}
    monkeypatch.setattr(converged.grid, "finished", lambda *cell: False)
    monkeypatch.setattr(converged.grid, "run_cell",
                        lambda task, method, seed, a: seen.update({(task, method, seed): a.keep}))
    cells = [("cb", "ft", 3), ("cb", "ft", 4), ("cb", "mixout(p=0.9)", 1), ("copa", "ft", 1),
             ("rte", "lp-ft", 2), ("rte", "ehft-bitfit", 1), ("rte", "ehft-lora", 1)]
    converged.run_cells(cells, _args(), lambda: "out", lambda task: 1e-5,
                        keep=converged.diagnosed)
    assert {c for c, keep in seen.items() if keep == converged.KEPT} == {
        ("cb", "ft", 3), ("rte", "lp-ft", 2), ("rte", "ehft-bitfit", 1)}
    assert [seen[c] for c in cells].count(None) == 4


def test_a_kept_cell_keeps_what_analyze_reads_and_drops_the_other_checkpoints(converged,
                                                                              tmp_path):
    work = tmp_path / "work" / "cb-ehft-bitfit-1-length"
    run = work / "cb" / "ehft-bitfit" / "seed1"
    for path in ("stage1/checkpoint_last.pt", "stage1/checkpoint_best.pt", "stage1/train.log",
                 "stage1/head.safetensors", "stage2/checkpoint_last.pt",
                 "stage2/checkpoint_best.pt", "stage2/train.log", "stage2/done.json"):
        (run / path).parent.mkdir(parents=True, exist_ok=True)
        (run / path).write_text("x")
    write_run_record(run, "cb", {"method": "ehft-bitfit", "seed": 1,
                                 "stages": [{"name": "stage1"}, {"name": "stage2"}]}, {})
    converged.grid.keep_for_analysis(str(run), str(work), str(tmp_path / "kept"))
    kept = tmp_path / "kept" / "cb-ehft-bitfit-1-length" / "cb" / "ehft-bitfit" / "seed1"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "run.json", "stage1/head.safetensors", "stage1/train.log", "stage2/checkpoint_last.pt",
        "stage2/done.json", "stage2/train.log"]
    assert not work.exists()


def test_diagnostics_wait_until_every_diagnosed_cell_is_kept(converged, monkeypatch, capsys):
    monkeypatch.setattr(converged, "KEPT", str(converged.OUT) + "/kept")
    fake_record(converged.OUT, "cb", "ft", 1, [50.0], 320)
    os.makedirs(os.path.join(converged.KEPT, "cb-ft-1-length"))
    assert converged.diagnostics(_args(tasks=["cb", "copa"])) == []
    out = capsys.readouterr().out
    assert "cb diagnostics wait for 8 kept cells: cb lp-ft seed 1, cb ehft-bitfit seed 1" in out
    assert "copa" not in out  # not a diagnosed task
    assert not os.path.exists(os.path.join(converged.OUT, "diagnostics"))


def test_cells_starting_side_by_side_prepare_their_task_once(converged, monkeypatch, tmp_path):
    import concurrent.futures
    import time

    calls = []

    def slow_prepare(cmd, **kw):  # `ehft prepare ... --out-dir OUT`: writes OUT/ehft_task.json
        calls.append(cmd)
        time.sleep(0.2)
        out = cmd[cmd.index("--out-dir") + 1]
        os.makedirs(out)
        open(os.path.join(out, "ehft_task.json"), "w").close()

    monkeypatch.setattr(converged.grid, "ROOT", str(tmp_path))
    monkeypatch.setattr(converged.grid.subprocess, "run", slow_prepare)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: converged.grid.prepare("rte", _args()), range(2)))
    assert len(calls) == 1
    assert outs[0] == outs[1] == str(tmp_path / ".cache" / "grid-data" / "rte")


def test_a_later_sweep_keeps_the_earlier_tasks_commands_and_cost_names_each(converged,
                                                                           monkeypatch):
    os.makedirs(os.path.join(converged.OUT, "sweep"))
    earlier = "python -m benchmarks.converged_grid sweep --tasks copa --jobs 1"
    with open(os.path.join(converged.OUT, "sweep", "how.json"), "w") as f:
        json.dump({"copa": {"command": earlier, "jobs": 1}}, f)
    for lr in converged.SWEEP_LRS:
        for seed in converged.SWEEP_SEEDS:
            fake_record(converged.sweep_dir(lr), "cb", "ft", seed, [50.0], 320)
    monkeypatch.setattr(sys, "argv", ["converged_grid.py", "sweep", "--tasks", "cb"])
    assert converged.sweep(_args(jobs=2)) == []
    how = converged.sweep_how()
    assert how["copa"] == {"command": earlier, "jobs": 1}
    assert how["cb"] == {"command": "python -m benchmarks.converged_grid sweep --tasks cb",
                         "jobs": 2}
    text = converged.cost(["cb", "copa"])
    assert ("`python -m benchmarks.converged_grid sweep --tasks cb` (2 cells side by side) "
            "for cb; `%s` (one cell at a time) for copa" % earlier) in text


def test_each_swept_rate_gets_its_ft_curves(converged):
    fake_record(converged.sweep_dir(2e-5), "rte", "ft", 1, [50, 52, 54, 55, 56, 57], 600)
    fake_record(converged.sweep_dir(2e-5), "rte", "ft", 2, [51, 53, 54, 56, 57, 58], 600)
    converged.write_sweep_curves(["cb", "rte"])
    text = open(os.path.join(converged.sweep_dir(2e-5), "convergence.md")).read()
    assert "## rte (2 seeds, 10 epochs)" in text and "## cb" not in text
    assert "| dev | 50.50 | 52.50 | 54.00 | 55.50 | 56.50 | 57.50 |" in text
    assert not os.path.exists(os.path.join(converged.sweep_dir(1e-5), "convergence.md"))


def test_the_report_says_whether_the_grid_reproduces_the_sweep_cells_its_rate_came_from(
        converged):
    swept = converged.sweep_dir(5e-5)
    for seed, curve in ((1, [60, 70, 75, 80]), (2, [62, 72, 74, 78])):
        fake_record(swept, "cb", "ft", seed, curve, 320)
        fake_record(converged.OUT, "cb", "ft", seed, curve, 320)
    for seed, best in ((3, 70), (4, 74)):
        fake_record(converged.OUT, "cb", "ft", seed, [60, best], 320)
    text = converged_report.rate_choice(converged.OUT, ["cb", "copa"], {"cb": (5e-5, swept)},
                                        (1, 2))
    assert "| cb | 5e-05 | identical | 79.00 (2) | 72.00 (2) |" in text
    assert "| copa |" not in text  # no sweep finished: no row
    # a grid cell that does not reproduce its sweep cell is flagged
    fake_record(swept, "copa", "ft", 1, [50, 55], 500)
    fake_record(converged.OUT, "copa", "ft", 1, [50, 56], 500)
    text = converged_report.rate_choice(converged.OUT, ["copa"], {"copa": (5e-5, swept)},
                                        (1, 2))
    assert "| copa | 5e-05 | **differ** | 56.00 (1) | — |" in text
    # nothing to compare: no section at all
    assert converged_report.rate_choice(converged.OUT, ["rte"], {"rte": (5e-5, swept)},
                                        (1, 2)) == ""


@pytest.mark.slow
def test_results_hold_the_complete_tasks_and_convergence_every_task(converged, monkeypatch):
    # mid-grid: CB has every cell, RTE only FT's. Results over CB keep every method's Avg;
    # convergence.md still follows RTE's FT
    monkeypatch.setattr(converged, "SEEDS", {"ft": 2, "ehft-bitfit": 2})
    for seed in (1, 2):
        fake_record(converged.OUT, "cb", "ft", seed, [60, 70 + seed], 320)
        fake_record(converged.OUT, "cb", "ehft-bitfit", seed, [60, 72 + seed], 320)
        fake_record(converged.OUT, "rte", "ft", seed, [50, 55, 53 + seed], 600)
    converged.report(_args(tasks=["cb", "rte"]))
    results = json.load(open(os.path.join(converged.OUT, "results.json")))
    assert "cb" in results and "rte" not in results
    assert results["cb"]["ft"]["mean"] == pytest.approx(71.5)
    assert "## rte (2 seeds, 10 epochs)" in open(
        os.path.join(converged.OUT, "convergence.md")).read()
    # no task complete: results over what has run, so that a first view exists
    converged.report(_args(tasks=["rte"]))
    results = json.load(open(os.path.join(converged.OUT, "results.json")))
    assert "rte" in results and "cb" not in results
    # RTE complete: it joins the results
    for seed in (1, 2):
        fake_record(converged.OUT, "rte", "ehft-bitfit", seed, [50, 56], 600)
    converged.report(_args(tasks=["cb", "rte"]))
    assert {"cb", "rte"} <= set(json.load(open(os.path.join(converged.OUT, "results.json"))))


@pytest.mark.slow
def test_the_report_sets_ft_trained_longer_beside_the_declared_budget(converged):
    for seed, (best, last) in ((1, (58, 57)), (2, (60, 59))):
        fake_record(converged.OUT, "rte", "ft", seed, [50] * 18 + [best, last], 600)
        fake_record(converged.budget_dir(20), "rte", "ft", seed,
                    [50] * 10 + [55] * 8 + [best + 2, last + 2], 1200)
    fake_record(converged.OUT, "rte", "ft", 3, [70, 70], 600)  # not a sweep seed: left out
    converged.write_file(os.path.join(converged.budget_dir(20), "how.json"), "{}")
    converged.report(_args(tasks=["rte"]))
    text = open(os.path.join(converged.OUT, "convergence.md")).read()
    assert "## FT trained longer" in text
    assert "| rte | 10 (declared) | 1, 2 | 59.00 (58.00, 60.00) | 58.00 (57.00, 59.00) |" in text
    assert "| rte | 20 | 1, 2 | 61.00 (60.00, 62.00) | 60.00 (59.00, 61.00) |" in text
    assert "## rte (2 seeds, 20 epochs)" in open(
        os.path.join(converged.budget_dir(20), "convergence.md")).read()


def test_a_longer_budget_trains_ft_on_the_sweep_seeds_at_the_chosen_rate(converged,
                                                                         monkeypatch):
    seen = []
    monkeypatch.setattr(converged.grid, "finished", lambda *cell: False)
    monkeypatch.setattr(converged.grid, "run_cell", lambda task, method, seed, a: seen.append(
        (method, seed, a.work, a.out, a.ft_lr, converged.grid.budget(task, a))))
    monkeypatch.setattr(converged, "budget",
                        lambda task, a, epochs=None: (["--total-epochs", epochs], []))
    os.makedirs(os.path.join(converged.OUT, "sweep"))
    converged.write_file(os.path.join(converged.OUT, "sweep", "rates.json"),
                         json.dumps({"rte": {"chosen": 5e-5}}))
    with pytest.raises(SystemExit, match="--epochs N"):
        converged.check_budget(_args(tasks=["rte"], epochs=0))
    assert converged.check_budget(_args(tasks=["rte"], epochs=20)) == []
    assert seen == [("ft", s, "w/epochs20", converged.budget_dir(20), 5e-5,
                     (["--total-epochs", 20], [])) for s in converged.SWEEP_SEEDS]
    with pytest.raises(SystemExit, match="no FT learning rate chosen yet for cb"):
        converged.check_budget(_args(tasks=["cb"], epochs=40))


def test_seed_lists_name_every_seed_unless_they_run_on():
    assert converged_report._seed_list((1, 2)) == "1–2"
    assert converged_report._seed_list((1, 2, 3)) == "1–3"
    assert converged_report._seed_list((1, 3)) == "1, 3"
    assert converged_report._seed_list((2,)) == "2"


def test_rekeep_retrains_the_finished_diagnosed_cells_whose_save_dir_is_gone(converged,
                                                                            monkeypatch):
    monkeypatch.setattr(converged, "KEPT", str(converged.OUT) + "/kept")
    seen = []
    monkeypatch.setattr(converged.grid, "run_cell", lambda task, method, seed, a: seen.append(
        (method, seed, a.work, a.out, a.ft_lr, a.keep)))
    os.makedirs(os.path.join(converged.OUT, "sweep"))
    converged.write_file(os.path.join(converged.OUT, "sweep", "rates.json"),
                         json.dumps({"rte": {"chosen": 5e-5}}))
    for method, seed in [("ft", 1), ("ft", 2), ("lp-ft", 1), ("ft", 4)]:
        fake_record(converged.OUT, "rte", method, seed, [50.0], 100)
    os.makedirs(converged.kept_dir("rte", "ft", 2))  # still kept
    # a record retrained for a save dir that is gone again: trained once more
    fake_record(converged.retrained_dir(), "rte", "lp-ft", 1, [40.0], 100)
    assert converged.rekeep(_args(tasks=["rte"], step="rekeep")) == []
    retrained = converged.retrained_dir()
    assert seen == [("ft", 1, "w/retrained", retrained, 5e-5, converged.KEPT),
                    ("lp-ft", 1, "w/retrained", retrained, 5e-5, converged.KEPT)]
    # ft seed 4 is not diagnosed; the grid itself keeps the diagnosed cells it has yet to run


def test_rekeep_retrains_only_the_methods_asked_for(converged, monkeypatch):
    monkeypatch.setattr(converged, "KEPT", str(converged.OUT) + "/kept")
    seen = []
    monkeypatch.setattr(converged.grid, "run_cell", lambda task, method, seed, a: seen.append(
        (method, seed)))
    os.makedirs(os.path.join(converged.OUT, "sweep"))
    converged.write_file(os.path.join(converged.OUT, "sweep", "rates.json"),
                         json.dumps({"rte": {"chosen": 5e-5}}))
    for method, seed in [("ft", 1), ("lp-ft", 1), ("ehft-bitfit", 2)]:
        fake_record(converged.OUT, "rte", method, seed, [50.0], 100)
    assert converged.rekeep(_args(tasks=["rte"], step="rekeep", methods=["ft"])) == []
    assert seen == [("ft", 1)]


def test_rekeep_into_other_records_leaves_the_grids_retrained_records_alone(converged,
                                                                            monkeypatch,
                                                                            tmp_path):
    monkeypatch.setattr(converged, "KEPT", str(converged.OUT) + "/kept")
    seen = []
    monkeypatch.setattr(converged.grid, "run_cell", lambda task, method, seed, a: seen.append(
        (method, seed, a.out)))
    os.makedirs(os.path.join(converged.OUT, "sweep"))
    converged.write_file(os.path.join(converged.OUT, "sweep", "rates.json"),
                         json.dumps({"rte": {"chosen": 5e-5}}))
    fake_record(converged.OUT, "rte", "ft", 1, [50.0], 100)
    # the grid's own diagnostics were made from this retrain: another experiment's must not
    # replace it
    fake_record(converged.retrained_dir(), "rte", "ft", 1, [40.0], 100)
    ours = converged.grid.record_dir("rte", "ft", 1,
                                     argparse.Namespace(out=converged.retrained_dir()))
    before = {f: open(os.path.join(ours, f)).read() for f in os.listdir(ours)
              if f.endswith(".json")}
    other = str(tmp_path / "stage1-retrained")
    assert converged.rekeep(_args(tasks=["rte"], step="rekeep", methods=["ft"],
                                  records=other)) == []
    assert seen == [("ft", 1, other)]
    assert {f: open(os.path.join(ours, f)).read() for f in before} == before


def test_records_is_refused_outside_rekeep(monkeypatch, capsys):
    import benchmarks.converged_grid as module
    monkeypatch.setattr(sys, "argv", ["converged_grid", "grid", "--records", "x"])
    with pytest.raises(SystemExit) as stop:
        module.main()
    assert stop.value.code == 2
    assert "--records" in capsys.readouterr().err


def test_diagnostics_name_the_retrained_cells_beside_the_grids(converged):
    fake_record(converged.OUT, "rte", "ft", 1, [50.0, 60.0], 100)
    fake_record(converged.retrained_dir(), "rte", "ft", 1, [50.0, 61.0], 100)
    assert converged.retrained("rte") == {"rte ft seed 1": {"grid_best_dev": 60.0,
                                                            "retrained_best_dev": 61.0}}
    # `ehft analyze` replaces diagnostics/TASK: the records live outside it
    assert not converged.retrained_dir().startswith(
        os.path.join(converged.OUT, "diagnostics"))
