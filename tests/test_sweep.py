"""`ehft train` sweeps: several methods, rates or batch sizes run as their product, each
setting x seed in a directory that names it, resumable, checked before anything runs; and
`ehft report` on the sweep."""

import json

import pytest
from conftest import ehft, prepare_rte, stock_checkpoint

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes

FAIRSEQ = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    data = prepare_rte(tmp, rows=40)
    checkpoint = stock_checkpoint(data, tmp / "pretrained")
    args = ["--data", data, "--checkpoint", checkpoint, "--total-updates", "2",
            "--batch-size", "8"]
    sweep = ["--method", "ft", "--lr-stage2", "1e-5", "1e-3", "--seeds", "1", "2"]
    result = ehft("train", "--save-dir", tmp / "runs", *sweep, *args, "--quiet", *FAIRSEQ)
    return {"tmp": tmp, "args": args, "sweep": sweep, "runs": tmp / "runs",
            "stdout": result.stdout}


def test_two_rates_by_two_seeds_run_four_runs_in_directories_named_by_their_rate(setup):
    rte = setup["runs"] / "rte" / "ft"
    made = sorted(str(p.parent.relative_to(rte)) for p in rte.glob("*/*/run.json"))
    assert made == ["lr2=0.001/seed1", "lr2=0.001/seed2", "lr2=1e-05/seed1", "lr2=1e-05/seed2"]
    for rate in ("1e-05", "0.001"):
        for seed in (1, 2):
            record = json.loads((rte / ("lr2=" + rate) / ("seed%d" % seed) / "run.json")
                                .read_text())
            assert record["config"]["stages"][0]["lr"] == float(rate)
            assert record["config"]["seed"] == seed
            assert record["config"]["setting"] == "lr2=" + rate
            assert (rte / ("lr2=" + rate) / ("seed%d" % seed) / "finetune" / "done.json"
                    ).is_file()
    printed = [json.loads(line)["run"] for line in setup["stdout"].splitlines()
               if line.startswith("{")]
    assert len(printed) == 4


def test_a_relaunch_of_the_sweep_skips_its_finished_runs(setup):
    done = sorted(setup["runs"].glob("rte/ft/*/*/finetune/done.json"))
    before = [p.stat().st_mtime_ns for p in done]
    ehft("train", "--save-dir", setup["runs"], *setup["sweep"], *setup["args"], "--quiet",
         *FAIRSEQ)
    assert [p.stat().st_mtime_ns for p in done] == before


def test_a_dry_run_lists_every_run_of_the_product_and_writes_nothing(setup, tmp_path):
    result = ehft("train", "--dry-run", "--save-dir", tmp_path / "runs",
                  "--method", "ft", "ehft-bitfit", "--lr-stage1", "5e-4", "1e-3",
                  "--lr-stage2", "1e-5", "2e-5", "--seeds", "1", "2", "--stage1-updates", "1",
                  *setup["args"], *FAIRSEQ)
    runs = [line.split()[2].rstrip(":") for line in result.stdout.splitlines()
            if line.startswith("# run ")]
    rte = str(tmp_path / "runs" / "rte")
    # ft uses no stage-1 rate: its two stage-1 rates would train the same run twice
    expected = ["%s/ft/lr2=%s/seed%d" % (rte, lr2, seed)
                for lr2 in ("1e-05", "2e-05") for seed in (1, 2)]
    expected += ["%s/ehft-bitfit/lr1=%s_lr2=%s/seed%d" % (rte, lr1, lr2, seed)
                 for lr1 in ("0.0005", "0.001") for lr2 in ("1e-05", "2e-05") for seed in (1, 2)]
    assert runs == expected
    assert result.stdout.count("fairseq-train ") == 4 + 8 * 2
    assert "--lr 0.001 " in result.stdout and "--lr 2e-05 " in result.stdout
    assert not (tmp_path / "runs").exists()


def test_one_value_per_flag_keeps_the_layout_of_a_command_without_a_sweep(setup, tmp_path):
    result = ehft("train", "--dry-run", "--save-dir", tmp_path / "runs", "--method", "ft",
                  "--lr-stage2", "2e-5", *setup["args"], *FAIRSEQ)
    assert "# run %s: ft, seed 1" % (tmp_path / "runs" / "rte" / "ft" / "seed1") in result.stdout


@pytest.mark.parametrize("change, message", [
    (["--lr-stage2"], "--lr-stage2: expected at least one argument"),
    (["--lr-stage2", "1e-5", "0"], "--lr-stage2 0.0: expected a number > 0"),
    (["--lr-stage1", "5e-4", "-0.001"], "--lr-stage1 -0.001: expected a number > 0"),
    (["--lr-stage2", "1e-5", "1e-5"], "--lr-stage2 1e-05 1e-05: a value is given twice"),
    (["--seeds", *map(str, range(101)), "--lr-stage2", "1e-5", "2e-5", "3e-5", "4e-5",
      "5e-5"], "the sweep is 505 runs (5 settings x 101 seeds), more than 500; pass --yes"),
    (["--method", "ft", "nope"], "unknown --method 'nope'"),
])
def test_a_bad_sweep_is_refused_in_one_line_before_anything_is_written(setup, tmp_path, change,
                                                                       message):
    base = ["--method", "ft", "--seeds", "1"]
    result = ehft("train", "--save-dir", tmp_path / "runs", *base, *setup["args"], *change,
                  *FAIRSEQ, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_long_sweep_runs_with_yes(setup, tmp_path):
    seeds = ["--seeds", *map(str, range(101))]
    rates = ["--lr-stage2", "1e-5", "2e-5", "3e-5", "4e-5", "5e-5"]
    result = ehft("train", "--dry-run", "--yes", "--save-dir", tmp_path / "runs",
                  "--method", "ft", *seeds, *rates, *setup["args"], *FAIRSEQ)
    assert result.stdout.count("# run ") == 505


def test_report_refuses_to_pool_the_rates_and_selects_one_on_dev(setup, tmp_path):
    pooled = ehft("report", setup["runs"], "--out", tmp_path / "r.md", check=False)
    assert pooled.returncode == 2 and "runs of ft on rte differ in finetune lr" in pooled.stderr
    ehft("report", setup["runs"], "--out", tmp_path / "r.md", "--select", "dev", "--no-plots")
    summary = json.loads((tmp_path / "r.json").read_text())
    settings = summary["selected_on_dev"]["sweep"][0]["settings"]
    assert sorted(row["setting"] for row in settings) == ["finetune lr=0.001",
                                                          "finetune lr=1e-05"]
    # the one chosen is the rate whose seeds have the best mean dev score
    best = max(settings, key=lambda row: (row["mean"], len(row["seeds"]), -(row["std"] or 0)))
    assert [row for row in settings if row["chosen"]] == [best]
    assert summary["rte"]["ft"]["mean"] == pytest.approx(best["mean"])
