"""`ehft report` on fabricated run directories: aggregation over seeds, selection, the paper
metric per task, published rows kept apart, plots, and refusals."""

import csv
import json
import shutil
import statistics

import pytest
from conftest import ehft

from ehft_plugin.evaluate.report import (PUBLISHED, ReportError, avg_difference_interval, collect,
                                         load_published, read_run, render_versus, report,
                                         summarise)
from ehft_plugin.train.rundir import write_done, write_run_record


def fake_run(root, task, method, seed, stages, metric="accuracy", finished=True, peft="full",
             lr=1e-5, setting=""):
    """A run directory as `ehft train` leaves it. stages: [(name, updates, records)], each
    record {"num_updates": n, "subset": "valid", metric: value, ...}; values are written as
    fairseq's JSON log writes them (strings); `peft`: the first stage's plan; `lr`: the last
    stage's rate; `setting`: the sweep's directory of the run."""
    run_dir = root / task / method / setting / ("seed%d" % seed)
    run_dir.mkdir(parents=True)
    config = {"method": method, "seed": seed, "updates": [n for _, n, _ in stages],
              "stages": [{"name": name, "peft": peft if i == 0 else "full",
                          "lr": lr if i == len(stages) - 1 else 1e-5}
                         for i, (name, _, _) in enumerate(stages)]}
    write_run_record(run_dir, task, config, {})
    for i, (name, n, records) in enumerate(stages):
        (run_dir / name).mkdir()
        if not finished and i == len(stages) - 1:
            continue
        valid = []
        for r in records:
            subset = r.get("subset", "valid")
            valid.append(dict({"%s_%s" % (subset, k): str(v) for k, v in r.items()
                               if k != "subset"}, subset=subset, epoch=1))
        write_done(run_dir / name, n, metric, valid, software={}, seconds={})
    return run_dir


def one_stage(*records):
    return [("finetune", 10, list(records))]


def two_stage(stage1, stage2):
    return [("stage1", 2, stage1), ("stage2", 8, stage2)]


RTE_FT = [61.0, 63.5, 58.25, 66.0]
RTE_EHFT = [64.0, 65.0, 67.5, 63.0]


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed, acc in enumerate(RTE_FT, 1):
        # the best validation is not the last one: "best" and "last" differ
        fake_run(root, "rte", "ft", seed, one_stage({"num_updates": 5, "accuracy": acc},
                                                    {"num_updates": 10, "accuracy": acc - 2}))
    for seed, acc in enumerate(RTE_EHFT, 1):
        fake_run(root, "rte", "ehft-bitfit", seed, two_stage(
            [{"num_updates": 2, "accuracy": 55.0}],  # stage 1 never counts for the cell
            [{"num_updates": 4, "accuracy": acc - 1}, {"num_updates": 8, "accuracy": acc}]))
    # MRPC selects on acc_f1 (headline) and reports accuracy (the paper metric) of that record
    for seed in (1, 2):
        fake_run(root, "mrpc", "ft", seed, one_stage(
            {"num_updates": 5, "acc_f1": 80.0, "accuracy": 75.0, "f1": 85.0},
            {"num_updates": 10, "acc_f1": 79.0, "accuracy": 77.0, "f1": 81.0}), metric="acc_f1")
    fake_run(root, "mrpc", "ehft-bitfit", 1, two_stage(
        [{"num_updates": 2, "acc_f1": 70.0, "accuracy": 70.0, "f1": 70.0}],
        [{"num_updates": 8, "acc_f1": 82.0, "accuracy": 80.0, "f1": 84.0}]), metric="acc_f1")
    # an interrupted run: stage 2 has not finished
    fake_run(root, "mrpc", "ehft-bitfit", 2, two_stage(
        [{"num_updates": 2, "acc_f1": 70.0, "accuracy": 70.0, "f1": 70.0}], []),
        metric="acc_f1", finished=False)
    return root


def test_cells_are_mean_and_sample_std_over_seeds_of_the_best_validation(runs):
    summary = summarise(collect([str(runs)])[0])
    cell = summary.cells["rte", "ft"]
    assert cell["values"] == RTE_FT and cell["seeds"] == [1, 2, 3, 4]
    assert cell["mean"] == pytest.approx(statistics.mean(RTE_FT))
    assert cell["std"] == pytest.approx(statistics.stdev(RTE_FT))  # n - 1, as papers report
    assert summary.cells["rte", "ehft-bitfit"]["values"] == RTE_EHFT  # stage 2's, not stage 1's


def test_last_selects_the_final_validation(runs):
    summary = summarise(collect([str(runs)], select="last")[0])
    assert summary.cells["rte", "ft"]["values"] == [a - 2 for a in RTE_FT]


def test_the_cell_is_the_paper_metric_of_the_record_chosen_by_the_headline(runs):
    summary = summarise(collect([str(runs)])[0])
    assert summary.metrics == {"rte": "accuracy", "mrpc": "accuracy"}
    # best acc_f1 is at update 5, where accuracy is 75 (not the 77 of update 10)
    assert summary.cells["mrpc", "ft"]["values"] == [75.0, 75.0]


def test_avg_needs_every_column_and_unfinished_runs_are_listed_not_counted(runs):
    found, unfinished = collect([str(runs)])
    assert [p.split("/")[-3:] for p in unfinished] == [["mrpc", "ehft-bitfit", "seed2"]]
    summary = summarise(found)
    assert summary.cells["mrpc", "ehft-bitfit"]["values"] == [80.0]
    assert summary.cells["mrpc", "ehft-bitfit"]["std"] is None  # one seed: no spread
    assert summary.avg["ft"]["mean"] == pytest.approx((statistics.mean(RTE_FT) + 75.0) / 2)
    fake_run(runs, "cola", "ft", 1, one_stage({"num_updates": 3, "mcc": 40.0, "accuracy": 70}),
             metric="mcc")
    summary = summarise(collect([str(runs)])[0])
    assert summary.metrics["cola"] == "mcc"
    assert summary.avg["ehft-bitfit"] == {"mean": None, "tasks": 2}  # no CoLA run: no Avg


def test_curves_run_over_both_stages_in_total_updates(runs):
    run = read_run(str(runs / "rte" / "ehft-bitfit" / "seed1"))
    assert run.curve == [(2, 55.0), (2 + 4, 63.0), (2 + 8, 64.0)]
    assert run.stage_starts == [2]


def test_a_task_without_runs_loses_its_curve_plot_on_the_next_report(runs, tmp_path):
    out = tmp_path / "out" / "results.md"
    report([str(runs)], str(out))
    assert (tmp_path / "out" / "results-curves-mrpc.png").exists()
    (tmp_path / "out" / "results-curves.png").write_bytes(b"not ours")  # another name: kept
    shutil.rmtree(runs / "mrpc")
    written = report([str(runs)], str(out))
    assert not (tmp_path / "out" / "results-curves-mrpc.png").exists()
    assert (tmp_path / "out" / "results-curves-rte.png").exists()
    assert (tmp_path / "out" / "results-curves.png").exists()
    assert not any("mrpc" in p for p in written)


def test_mnli_mismatched_is_read_at_the_update_chosen_on_matched(tmp_path):
    records = [{"num_updates": 5, "accuracy": 80.0}, {"subset": "valid1", "num_updates": 5,
                                                       "accuracy": 79.0},
               {"num_updates": 10, "accuracy": 78.0}, {"subset": "valid1", "num_updates": 10,
                                                        "accuracy": 81.0}]
    fake_run(tmp_path, "mnli", "ft", 1, one_stage(*records))
    summary = summarise(collect([str(tmp_path)])[0])
    assert summary.columns == ["mnli", "mnli-mm"]
    assert summary.cells["mnli-mm", "ft"]["values"] == [79.0]


def test_report_files_markdown_csv_json_and_plots(runs, tmp_path):
    out = tmp_path / "out" / "results.md"
    written = report([str(runs)], str(out), how="test")
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == [
        "results-bars.png", "results-curves-mrpc.png", "results-curves-rte.png", "results.csv",
        "results.json", "results.md"]
    for png in (p for p in written if p.endswith(".png")):
        from matplotlib.image import imread
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        height, width = imread(png).shape[:2]
        assert height > 100 and width > 100
    text = out.read_text()
    measured, _, published = text.partition("## Published, not measured here")
    ft_row = next(line for line in measured.splitlines() if line.startswith("| ft |"))
    rte = "%.2f ±%.2f (4)" % (statistics.mean(RTE_FT), statistics.stdev(RTE_FT))
    assert ft_row == "| ft | %s | 75.00 ±0.00 (2) | %.2f |" % (
        rte, (statistics.mean(RTE_FT) + 75) / 2)
    assert "| ehft-bitfit | 64.88 ±1.93 (4) | 80.00 ±— (1) | 72.44 |" in measured
    assert "roberta.large" not in measured and "86.96" not in measured  # never mixed
    assert "| FT | ft | " in published and "86.96" in published
    assert "Unfinished runs (not counted)" in text and "mrpc/ehft-bitfit/seed2" in text
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["rte"]["ft"] == {"mean": pytest.approx(statistics.mean(RTE_FT)),
                                    "std": pytest.approx(statistics.stdev(RTE_FT)), "seeds": 4,
                                    "metric": "accuracy"}
    assert summary["avg"]["ehft-bitfit"]["tasks"] == 2
    with open(tmp_path / "out" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 + 4 + 2 + 1  # one per finished run and column
    mrpc = next(r for r in rows if r["task"] == "mrpc" and r["method"] == "ehft-bitfit")
    assert (mrpc["acc_f1"], mrpc["accuracy"], mrpc["f1"]) == ("82.0000", "80.0000", "84.0000")


def test_the_bundled_published_tables_hold_what_their_sources_print():
    tables = load_published([PUBLISHED])
    assert [t["name"] for t in tables] == ["RoBERTa (fairseq README)",
                                           "EH-FT, RoBERTa-large (Yang et al. 2022)"]
    for table in tables:
        for row in table["rows"]:
            values = list(row["values"].values())
            if row.get("avg") is not None and not row.get("note"):
                # a transcription check: the published Avg is the mean of the published cells
                assert sum(values) / len(values) == pytest.approx(row["avg"], abs=0.01)


@pytest.mark.slow
def test_the_command_line_and_its_refusals(runs, tmp_path):
    result = ehft("report", runs, "--out", tmp_path / "r.md", "--no-published", "--no-plots")
    assert "Published" not in (tmp_path / "r.md").read_text()
    assert not list(tmp_path.glob("*.png"))
    assert '"wrote"' in result.stdout
    empty = tmp_path / "empty"
    empty.mkdir()
    result = ehft("report", empty, "--out", tmp_path / "e.md", check=False)
    assert result.returncode == 2 and "no finished runs under" in result.stderr
    assert not (tmp_path / "e.md").exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"tables": []}')
    result = ehft("report", runs, "--out", tmp_path / "b.md", "--published-file", bad,
                  check=False)
    assert result.returncode == 2 and "bad.json: not a published-results file" in result.stderr
    assert not (tmp_path / "b.md").exists()


def test_a_corrupt_run_record_is_named(runs, tmp_path):
    (runs / "rte" / "ft" / "seed1" / "run.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"rte/ft/seed1/run.json: cannot be read as JSON"):
        collect([str(runs)])
    with pytest.raises(ReportError, match=r"--out x.txt: expected a .md file name"):
        report([str(runs)], "x.txt")
    with pytest.raises(ReportError, match=r"/nowhere: no such directory"):
        collect(["/nowhere"])


def test_a_run_without_a_dev_validation_is_named(tmp_path):
    fake_run(tmp_path, "rte", "ft", 1, one_stage({"num_updates": 5, "loss": 0.7}))
    with pytest.raises(ReportError, match=r"rte/ft/seed1/finetune/done.json: holds no "
                                          r"validation of the dev set with its metric "
                                          r"'accuracy'"):
        collect([str(tmp_path)])


def test_every_method_is_compared_with_ft_over_seeds(runs, tmp_path):
    from scipy.stats import ttest_ind

    out = tmp_path / "v.md"
    report([str(runs)], str(out), published_files=[], plots=False)
    versus = out.read_text().split("## Against ft")[1]
    diff = statistics.mean(RTE_EHFT) - statistics.mean(RTE_FT)
    p = ttest_ind(RTE_EHFT, RTE_FT, equal_var=False).pvalue
    avg_diff = (statistics.mean(RTE_EHFT) + 80) / 2 - (statistics.mean(RTE_FT) + 75) / 2
    # MRPC: one ehft-bitfit seed finished, so no test there
    assert "| ehft-bitfit | %+.2f (p %.2f) | +5.00 (n/a) | %+.2f |" % (diff, p, avg_diff) \
        in versus
    assert ("- ehft-bitfit: higher mean than ft on 2 of 2 tasks; beyond seed noise higher on "
            "%d, lower on 0; Avg %+.2f, no interval (a cell has one seed)." % (p < 0.05, avg_diff)
            ) in versus


def _ft_and_ehft(tmp_path, task, ft, ehft_, method="ehft-bitfit"):
    """Finished ft and `method` runs on `task`, one per seed, with these dev accuracies;
    returns the summary of every run under tmp_path."""
    for seed, (a, b) in enumerate(zip(ft, ehft_), 1):
        fake_run(tmp_path, task, "ft", seed, one_stage({"num_updates": 5, "accuracy": a}))
        fake_run(tmp_path, task, method, seed, one_stage({"num_updates": 5, "accuracy": b}))
    return summarise(collect([str(tmp_path)])[0])


def test_the_avg_difference_gets_a_confidence_interval_once_every_cell_has_seeds(tmp_path):
    from scipy.stats import ttest_ind

    ft, ehft_ = [50.0, 54.0, 52.0, 57.0], [60.0, 62.0, 61.0, 63.0]
    summary = _ft_and_ehft(tmp_path, "rte", ft, ehft_)
    # one column: the Avg difference is that column's, and its interval is Welch's
    welch = ttest_ind(ehft_, ft, equal_var=False).confidence_interval(0.95)
    low, high = avg_difference_interval(summary, "ehft-bitfit", "ft")
    assert (low, high) == pytest.approx((welch.low, welch.high))
    assert low > 0  # these seeds are far apart: beyond noise
    text = render_versus(summary, "ft")
    assert "Avg %+.2f [%+.2f, %+.2f]: higher beyond seed noise on average." % (
        statistics.mean(ehft_) - statistics.mean(ft), low, high) in text
    assert "| ehft-bitfit | +8.25 (p %.1e) | +8.25 [" % ttest_ind(ehft_, ft, equal_var=False
                                                                ).pvalue in text  # p < 0.01
    # a second column where the two overlap widens the interval across 0
    for seed, (a, b) in enumerate(zip([70.0, 80.0, 75.0, 72.0], [71.0, 74.0, 79.0, 70.0]), 1):
        fake_run(tmp_path, "cb", "ft", seed, one_stage({"num_updates": 5, "accuracy": a}))
        fake_run(tmp_path, "cb", "ehft-bitfit", seed, one_stage({"num_updates": 5,
                                                                 "accuracy": b}))
    summary = summarise(collect([str(tmp_path)])[0])
    low2, high2 = avg_difference_interval(summary, "ehft-bitfit", "ft")
    assert low2 < 0 < high2
    assert "within seed noise on average." in render_versus(summary, "ft")


def test_the_best_single_stage_peft_is_named_by_avg_among_one_stage_peft_methods(tmp_path):
    def run(task, method, acc, peft, two=False):
        records = [{"num_updates": 5, "accuracy": acc}]
        fake_run(tmp_path, task, method, 1,
                 two_stage([], records) if two else one_stage(*records), peft=peft)

    for task, base in (("rte", 60.0), ("cb", 70.0)):
        run(task, "ft", base + 9, "full")  # the highest: but full finetuning
        run(task, "mixout(p=0.9)", base + 10, "mixout(p=0.9)")  # full finetuning too
        run(task, "ehft-lora", base + 8, "0-5:lora(r=8)", two=True)  # two stages
        run(task, "bitfit", base + 1, "bitfit")
        run(task, "lora", base + 3, "0-5:lora(r=8)")
    run("rte", "prefix", 90.0, "0-5:prefix(len=16)")  # best on RTE, but has no CB cell
    summary = summarise(collect([str(tmp_path)])[0])
    assert summary.single_stage_peft == ["bitfit", "lora", "prefix"]
    out = tmp_path / "r.md"
    report([str(tmp_path)], str(out), published_files=[], plots=False)
    assert ("Best single-stage PEFT by Avg: **lora** (lora 68.00, bitfit 66.00); without every "
            "column, not ranked: prefix.") in out.read_text()
    # none with every column: said so, not guessed from the columns there are
    shutil.rmtree(tmp_path / "cb")
    run("cb", "ft", 70.0, "full")
    report([str(tmp_path)], str(out), published_files=[], plots=False)
    assert ("Best single-stage PEFT: none yet, as no single-stage PEFT method (bitfit, lora, "
            "prefix) has every column.") in out.read_text()


@pytest.mark.slow
def test_the_baseline_can_be_another_method_and_must_exist(runs, tmp_path):
    result = ehft("report", runs, "--out", tmp_path / "b.md", "--no-published", "--no-plots",
                  "--baseline", "ehft-bitfit")
    text = (tmp_path / "b.md").read_text()
    assert "## Against ehft-bitfit" in text and "## Against ft" not in text
    assert "- ft: higher mean than ehft-bitfit on 0 of 2 tasks" in text
    result = ehft("report", runs, "--out", tmp_path / "c.md", "--baseline", "lora", check=False)
    assert result.returncode == 2
    assert "--baseline lora: no finished runs of it; methods: ft, ehft-bitfit" in result.stderr
    assert not (tmp_path / "c.md").exists()
    shutil.rmtree(runs / "rte" / "ft")
    shutil.rmtree(runs / "mrpc" / "ft")
    report([str(runs)], str(tmp_path / "d.md"), published_files=[], plots=False)
    assert "## Against" not in (tmp_path / "d.md").read_text()  # no ft runs: nothing to compare


def test_the_report_says_what_the_grid_can_decide(tmp_path):
    """Next to the interval: the smallest Avg difference these seeds would detect (80% power,
    two-sided 5%), the paper's gain on the same tasks, and "inconclusive" when the interval
    holds both 0 and that gain."""
    from scipy.stats import t

    from ehft_plugin.evaluate.report import detectable_difference, paper_gains

    ft, ehft_ = [70.0, 80.0, 75.0, 72.0], [71.0, 74.0, 79.0, 76.0]
    summary = _ft_and_ehft(tmp_path, "cb", ft, ehft_)
    a, b = statistics.variance(ft) / 4, statistics.variance(ehft_) / 4  # s²/n of each mean
    se, df = (a + b) ** 0.5, (a + b) ** 2 / (a ** 2 / 3 + b ** 2 / 3)  # Welch-Satterthwaite
    low, high = avg_difference_interval(summary, "ehft-bitfit", "ft")
    detectable = detectable_difference(summary, "ehft-bitfit", "ft")
    assert detectable == pytest.approx((t.ppf(0.975, df) + t.ppf(0.8, df)) * se)
    gains = paper_gains(load_published([PUBLISHED]), ["cb"], "ft")
    assert gains["ehft-bitfit"] == pytest.approx(99.12 - 94.64)  # EH-FT paper, CB
    text = render_versus(summary, "ft", gains)
    assert low < 0 < high and low < gains["ehft-bitfit"] < high  # the grid cannot tell
    assert ("Detectable: %.2f. The paper's gain on these tasks: +4.48; **inconclusive**"
            % detectable) in text
    # a gain outside the interval is decided, and not called inconclusive
    decided = render_versus(summary, "ft", {"ehft-bitfit": high + 1})
    assert "inconclusive" not in decided and ("The paper's gain on these tasks: %+.2f; the "
                                              "interval excludes it." % (high + 1)) in decided
    # an interval above 0 that holds the gain agrees with the paper
    better = _ft_and_ehft(tmp_path / "better", "cb", ft, [v + 10 for v in ehft_])
    low, high = avg_difference_interval(better, "ehft-bitfit", "ft")
    assert 0 < low
    agrees = render_versus(better, "ft", {"ehft-bitfit": (low + high) / 2})
    assert ("The paper's gain on these tasks: %+.2f; the interval holds it and excludes 0."
            % ((low + high) / 2)) in agrees
    # a method written with its arguments takes the published row of its name, and says so
    with_args = render_versus(summary, "ft", {"ehft-bitfit(p=1)": 9.0, "ehft-lora": 9.0})
    assert "The paper's gain" not in with_args  # neither row is this method's
    lora = _ft_and_ehft(tmp_path / "lora", "cb", ft, ehft_, method="ehft-lora(r=8,alpha=16)")
    text = render_versus(lora, "ft", {"ehft-lora": high + 1})
    assert ("- ehft-lora(r=8,alpha=16): higher mean than ft" in text
            and "The paper's gain on these tasks (its ehft-lora row): %+.2f; the interval "
                "excludes it." % (high + 1)) in text


def sweep_runs(root):
    """ft at three rates x 3 seeds on RTE (known dev scores: 1e-05 has the best mean), and
    lp at one rate."""
    scores = {1e-5: [70.0, 66.0, 68.0], 2e-5: [71.0, 60.0, 62.0], 3e-5: [50.0, 52.0, 51.0]}
    for lr, values in scores.items():
        for seed, acc in enumerate(values, 1):
            fake_run(root, "rte", "ft", seed, one_stage({"num_updates": 10, "accuracy": acc}),
                     lr=lr, setting="lr2=%g" % lr)
    for seed in (1, 2):
        fake_run(root, "rte", "lp", seed, one_stage({"num_updates": 10, "accuracy": 55.0}),
                 peft="head", lr=5e-4)
    return root


@pytest.mark.slow
def test_runs_of_one_method_with_different_settings_are_not_pooled(tmp_path):
    root = sweep_runs(tmp_path / "runs")
    with pytest.raises(ReportError, match=r"runs of ft on rte differ in finetune lr "
                                          r"\(1e-05 in .*lr2=1e-05/seed1; 2e-05 in .*--select dev"):
        report([root], str(tmp_path / "r.md"), plots=False)
    assert not (tmp_path / "r.md").exists()
    refused = ehft("report", root, "--out", tmp_path / "r.md", check=False)
    assert refused.returncode == 2 and "differ in finetune lr" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_wall_time_is_shown_only_when_every_run_timed_its_stages(tmp_path):
    root = tmp_path / "runs"
    for seed, method in ((1, "ft"), (2, "ft"), (1, "lp")):
        fake_run(root, "rte", method, seed, one_stage({"num_updates": 10, "accuracy": 60.0}))
    for seed, spent in ((1, 30.0), (2, 50.0)):  # both FT runs timed, LP's run from before
        done = root / "rte" / "ft" / ("seed%d" % seed) / "finetune" / "done.json"
        record = json.loads(done.read_text())
        record["seconds"] = {"fairseq_train": spent, "training": spent - 5}
        done.write_text(json.dumps(record))
    report([root], str(tmp_path / "r.md"), plots=False)
    rows = {line.split("|")[2].strip(): line for line in
            (tmp_path / "r.md").read_text().splitlines() if line.startswith("| RTE |")
            and line.count("|") == 9}
    assert "| 40 |" in rows["ft"]  # the mean of 30 and 50; the training loop is inside them
    assert "| — |" in rows["lp"]  # not 0: the run recorded no timings
    summary = json.loads((tmp_path / "r.json").read_text())["cost"]["rte"]
    assert summary["ft"]["seconds"] == 40.0 and summary["lp"]["seconds"] is None


def test_the_compute_table_totals_runs_and_machine_hours(tmp_path):
    root = tmp_path / "runs"
    for seed, spent in ((1, 1800.0), (2, 5400.0)):
        fake_run(root, "rte", "ft", seed, one_stage({"num_updates": 10, "accuracy": 60.0}))
        done = root / "rte" / "ft" / ("seed%d" % seed) / "finetune" / "done.json"
        record = json.loads(done.read_text())
        record["seconds"] = {"fairseq_train": spent}
        done.write_text(json.dumps(record))
    report([root], str(tmp_path / "r.md"), plots=False)
    assert "Total: 2 runs, 2.0 machine hours of wall time" in (tmp_path / "r.md").read_text()
    fake_run(root, "rte", "lp", 1, one_stage({"num_updates": 10, "accuracy": 55.0}))  # untimed
    report([root], str(tmp_path / "r.md"), plots=False)
    assert "Total: 3 runs; some recorded no wall time." in (tmp_path / "r.md").read_text()


def test_the_compute_table_charges_every_launch_of_a_resumed_stage(tmp_path):
    root = tmp_path / "runs"
    for seed, record in ((1, {"launches": 2, "seconds": {"fairseq_train": 1800.0,
                                                          "earlier_launches": 1800.0}}),
                         (2, {"launches": 1, "seconds": {"fairseq_train": 3600.0}})):
        fake_run(root, "rte", "ft", seed, one_stage({"num_updates": 10, "accuracy": 60.0}))
        done = root / "rte" / "ft" / ("seed%d" % seed) / "finetune" / "done.json"
        done.write_text(json.dumps({**json.loads(done.read_text()), **record}))
    report([root], str(tmp_path / "r.md"), plots=False)
    assert "Total: 2 runs, 2.0 machine hours of wall time.\n" in (tmp_path / "r.md").read_text()
    # a run recorded before launches were counted holds its last launch only: said so
    fake_run(root, "rte", "lp", 1, one_stage({"num_updates": 10, "accuracy": 55.0}))
    done = root / "rte" / "lp" / "seed1" / "finetune" / "done.json"
    done.write_text(json.dumps({**json.loads(done.read_text()),
                                "seconds": {"fairseq_train": 3600.0}}))
    report([root], str(tmp_path / "r.md"), plots=False)
    assert ("Total: 3 runs, 3.0 machine hours of wall time (in the 1 run recorded before "
            "launches were counted, a stage resumed over several launches counts its last "
            "launch).") in (tmp_path / "r.md").read_text()


def test_a_task_argument_given_at_its_default_is_the_same_setting():
    from ehft_plugin.evaluate.report import settings
    from ehft_plugin.tasks.glue_ehft import GlueEhftConfig

    for flag, value in settings.TASK_DEFAULTS.items():  # the defaults are glue_ehft's own
        assert getattr(GlueEhftConfig, flag[2:].replace("-", "_")) == value
    same = settings._learning_args
    assert same(["--cpu", "--batch-order", "length"]) == same(["--cpu"]) == ["--cpu"]
    assert same(["--batch-order=length", "--cpu"]) == ["--cpu"]
    assert same(["--cpu", "--batch-order", "random"]) == ["--cpu", "--batch-order", "random"]
    assert same(["--batch-order"]) == ["--batch-order"]  # cut short: kept, as fairseq refuses it


@pytest.mark.slow
def test_select_dev_reports_the_setting_with_the_best_mean_dev_score(tmp_path):
    root = sweep_runs(tmp_path / "runs")
    ehft("report", root, "--out", tmp_path / "r.md", "--select", "dev", "--no-plots")
    summary = json.loads((tmp_path / "r.json").read_text())
    # means: 1e-05 68.0, 2e-05 64.33 (its best seed is the best single run), 3e-05 51.0
    assert summary["rte"]["ft"]["mean"] == pytest.approx(68.0)
    assert summary["rte"]["ft"]["seeds"] == 3 and summary["rte"]["lp"]["mean"] == 55.0
    sweep = {(s["method"], row["setting"]): row for s in summary["selected_on_dev"]["sweep"]
             for row in s["settings"]}
    assert sweep["ft", "finetune lr=1e-05"]["chosen"]
    assert not sweep["ft", "finetune lr=2e-05"]["chosen"]
    assert sweep["ft", "finetune lr=3e-05"]["mean"] == pytest.approx(51.0)
    text = (tmp_path / "r.md").read_text()
    assert "Selected on dev" in text and "optimistic" in text  # the rule, above the table
    assert text.index("Selected on dev") < text.index("| method |")
    assert "| RTE | ft | finetune lr=1e-05 | 1,2,3 | 68.00 ±2.00 | **selected** |" in text


def test_a_dev_selection_tie_goes_to_more_seeds_then_the_smaller_std(tmp_path):
    root = tmp_path / "runs"
    for lr, values in {1e-5: [60.0, 62.0], 2e-5: [61.0, 61.0, 61.0], 3e-5: [61.0, 61.0]}.items():
        for seed, acc in enumerate(values, 1):
            fake_run(root, "rte", "ft", seed, one_stage({"num_updates": 10, "accuracy": acc}),
                     lr=lr, setting="lr2=%g" % lr)
    report([root], str(tmp_path / "r.md"), plots=False, on_dev=True)
    sweep = json.loads((tmp_path / "r.json").read_text())["selected_on_dev"]["sweep"][0]
    assert [row["setting"] for row in sweep["settings"] if row["chosen"]] == \
        ["finetune lr=2e-05"]


@pytest.mark.slow
def test_select_names_only_what_exists(tmp_path):
    root = sweep_runs(tmp_path / "runs")
    refused = ehft("report", root, "--out", tmp_path / "r.md", "--select", "test", check=False)
    assert refused.returncode == 2 and "--select: invalid choice: 'test'" in refused.stderr
    both = ehft("report", root, "--out", tmp_path / "r.md", "--select", "last",
                "--validation", "best", check=False)
    assert both.returncode == 2 and "--validation" in both.stderr
    assert not (tmp_path / "r.md").exists()
