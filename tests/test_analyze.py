"""`ehft analyze`: the paper's diagnostics on finished runs, and `ehft train --log-drift`."""

import json
import os
import shutil

import pytest
import torch
from conftest import ehft, fairseq_train, prepare_rte, stock_checkpoint

from ehft_plugin.train.rundir import train_records, write_run_record
from ehft_plugin.models.drift import parameter_distance

FAIRSEQ = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0",
           "--log-interval", "1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analyze")
    data = prepare_rte(tmp, rows=40)
    checkpoint = stock_checkpoint(data, tmp / "pretrained")
    args = ["--data", data, "--checkpoint", checkpoint, "--total-updates", "6",
            "--batch-size", "8", "--warmup-ratio", "0", "--log-drift", "--stage1-ratio", "0.1"]
    for method in ("ft", "lp", "lp-ft", "ehft-bitfit"):
        ehft("train", "--method", method, "--save-dir", tmp / "runs", *args, *FAIRSEQ)
    # the stage-1 share ablation: the same method with another share, in its own save dir
    ehft("train", "--method", "ehft-bitfit", "--save-dir", tmp / "share50", *args,
         "--stage1-ratio", "0.5", *FAIRSEQ)
    return tmp


def _drift(run_dir, stage):
    return [(int(r["num_updates"]), r["drift"]) for r in train_records(str(run_dir / stage / "train.log"))]


@pytest.mark.slow
def test_log_drift_records_the_distance_from_the_pretrained_backbone(runs):
    ft = _drift(runs / "runs/rte/ft/seed1", "finetune")
    assert [u for u, _ in ft] == [1, 2, 3, 4, 5, 6]
    assert ft[0][1] == 0.0  # measured before the first update: the pretrained weights
    assert all(d > 0 for _, d in ft[1:])
    # EH-FT stage 2 starts from the original backbone too; stage 1 moved only biases
    stage2 = _drift(runs / "runs/rte/ehft-bitfit/seed1", "stage2")
    assert stage2[0] == (1, 0.0) and stage2[-1][1] > 0
    # a linear probe never touches the backbone
    assert {d for _, d in _drift(runs / "runs/rte/lp/seed1", "finetune")} == {0.0}


@pytest.mark.slow
def test_logging_drift_leaves_training_unchanged_to_the_bit(runs, tmp_path):
    # dropout on: measuring must not draw from the random streams the masks come from
    args = ["--method", "ft", "--data", runs / "bin", "--checkpoint",
            runs / "pretrained" / "checkpoint_last.pt", "--total-updates", "4",
            "--batch-size", "8", "--", "--cpu", "--num-workers", "0", "--max-positions", "128",
            "--dropout", "0.1", "--attention-dropout", "0.1", "--log-interval", "1"]
    ehft("train", "--save-dir", tmp_path / "plain", *args)
    ehft("train", "--save-dir", tmp_path / "drift", "--log-drift", *args)
    plain, drift = (torch.load(tmp_path / d / "rte/ft/seed1/finetune/checkpoint_last.pt",
                               weights_only=False)["model"] for d in ("plain", "drift"))
    assert plain.keys() == drift.keys()
    assert all(torch.equal(plain[k], drift[k]) for k in plain)
    assert _drift(tmp_path / "drift/rte/ft/seed1", "finetune")  # it did log


@pytest.mark.slow
def test_log_drift_from_a_missing_file_stops_before_training(runs, tmp_path):
    result, _ = fairseq_train(runs / "bin", tmp_path / "save", "--log-drift-from",
                              tmp_path / "nowhere.pt", check=False)
    assert result.returncode != 0
    assert "--log-drift-from %s: no such checkpoint file" % (tmp_path / "nowhere.pt") \
        in result.stderr
    assert not (tmp_path / "save" / "checkpoint_last.pt").exists()


def test_parameter_distance_is_the_l2_norm_over_the_named_parameters():
    model = torch.nn.Linear(3, 2)
    reference = {"weight": model.weight.detach().clone() + 3.0}  # bias: not in the reference
    assert parameter_distance(model, reference) == pytest.approx(6 ** 0.5 * 3.0)


@pytest.fixture(scope="module")
def analysis(runs):
    out = runs / "analysis"
    result = ehft("analyze", runs / "runs", runs / "share50", "--out", out, "--examples", "24",
                  "--grad-batches", "2", "--batch-size", "8")
    return out, json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_feature_drift_is_zero_for_a_frozen_backbone_and_positive_for_finetuning(analysis):
    out, printed = analysis
    result = json.loads((out / "analysis.json").read_text())
    drift = result["feature_drift"]["rte"]
    assert drift["examples"] == 24
    methods = drift["methods"]
    assert methods["lp"]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert methods["ft"]["mean"] > 1e-3 and methods["lp-ft"]["mean"] > 1e-3
    # one EH-FT method with two stage-1 shares (1 of 6 updates, 3 of 6): one label each
    cell = methods["ehft-bitfit (stage 1 17%)"]
    assert cell["by_seed"] == {"1": cell["mean"]} and "ehft-bitfit (stage 1 50%)" in methods
    assert "feature_drift.png" in printed["figures"]


@pytest.mark.slow
def test_feature_drift_and_heads_outlive_the_files_they_were_measured_on(runs, analysis,
                                                                          tmp_path):
    out, _ = analysis
    measured = json.loads((out / "analysis.json").read_text())
    # a copy of two runs with every checkpoint and head file deleted, as users do to save disk
    for method in ("ft", "lp-ft"):
        shutil.copytree(runs / "runs" / "rte" / method, tmp_path / "slim" / "rte" / method,
                        ignore=shutil.ignore_patterns("*.pt", "*.safetensors"))
    record = json.loads((tmp_path / "slim/rte/ft/seed1/measured.json").read_text())
    assert record["feature_drift"][0]["settings"]["examples"] == 24
    result = ehft("analyze", tmp_path / "slim", "--out", tmp_path / "a", "--only",
                  "feature_drift,heads", "--examples", "24", "--grad-batches", "2",
                  "--batch-size", "8")
    again = json.loads((tmp_path / "a" / "analysis.json").read_text())
    drift = again["feature_drift"]["rte"]
    assert drift["examples"] == 24
    for method in ("ft", "lp-ft"):
        assert drift["methods"][method]["mean"] == \
            measured["feature_drift"]["rte"]["methods"][method]["mean"]
    assert "ft seed 1: %.3f, as measured before its checkpoint was deleted" % (
        measured["feature_drift"]["rte"]["methods"]["ft"]["mean"]) in result.stderr
    # LP's head: its gradient and t-SNE as measured; the random head measured again, equal
    heads, before = again["heads"]["rte"], measured["heads"]["rte"]
    for label in ("LP", "random"):
        assert heads["gradient"]["methods"][label]["by_seed"] == \
            before["gradient"]["methods"][label]["by_seed"]
        assert heads["tsne"][label] == before["tsne"][label]
    assert heads["over_random"]["LP"] == before["over_random"]["LP"]
    assert "LP seed 1: initial backbone gradient norm" in result.stderr
    assert "as measured before its head file was deleted" in result.stderr
    # other settings were never measured: nothing to give, and it says so
    result = ehft("analyze", tmp_path / "slim", "--out", tmp_path / "b", "--only",
                  "feature_drift,heads", "--examples", "12", check=False)
    assert "rte: no run kept its final checkpoint, skipped" in result.stderr
    assert "rte: no stage-1 head to compare with a random one, skipped" in result.stderr
    assert set(json.loads((tmp_path / "b" / "analysis.json").read_text())["skipped"]) == {
        "feature_drift", "heads"}


@pytest.mark.slow
def test_runs_trained_from_another_checkout_of_the_plugin_are_analysed(runs, tmp_path):
    import ehft_plugin

    # the plugin as another checkout holds it: fairseq would refuse a second `ehft_plugin`
    other = tmp_path / "elsewhere" / "ehft_plugin"
    shutil.copytree(os.path.dirname(ehft_plugin.__file__), other,
                    ignore=shutil.ignore_patterns("__pycache__"))
    run_dir = tmp_path / "moved" / "rte" / "ft" / "seed1"
    shutil.copytree(runs / "runs" / "rte" / "ft" / "seed1", run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    command = record["commands"]["finetune"]
    command[command.index("--user-dir") + 1] = str(other)
    write_run_record(run_dir, record["task"], record["config"], record["commands"])
    ehft("analyze", tmp_path / "moved", "--out", tmp_path / "a", "--only", "feature_drift",
         "--examples", "8")
    assert json.loads((tmp_path / "a" / "analysis.json").read_text())["feature_drift"]["rte"][
        "methods"]["ft"]["mean"] > 1e-3


@pytest.mark.slow
def test_heads_compare_a_random_head_with_the_stage1_heads(analysis):
    out, _ = analysis
    heads = json.loads((out / "analysis.json").read_text())["heads"]["rte"]
    gradient = heads["gradient"]["methods"]
    assert set(gradient) == {"random", "LP", "ehft-bitfit (stage 1 17%) stage 1",
                             "ehft-bitfit (stage 1 50%) stage 1"}
    assert all(cell["mean"] > 0 for cell in gradient.values())
    ratio = heads["random_over"]["LP"]
    assert ratio == pytest.approx(gradient["random"]["mean"] / gradient["LP"]["mean"])
    # read the paper's way (§4): how many times larger a trained head's gradient is
    assert heads["over_random"]["LP"] == pytest.approx(1 / ratio)
    text = (out / "analysis.md").read_text()
    assert "| task | head | backbone gradient norm | head / random | silhouette |" in text
    assert "| rte | LP | %.4f (n=1) | %.1f× |" % (gradient["LP"]["mean"], 1 / ratio) in text
    tsne = heads["tsne"]
    rte_dev = 40  # prepare_rte keeps 40 rows of each file
    assert len(tsne["random"]["points"]) == min(24, rte_dev)
    assert len(tsne["random"]["targets"]) == 24 and -1 <= tsne["LP"]["silhouette"] <= 1
    assert (out / "heads_tsne-rte.png").is_file()


@pytest.mark.slow
def test_parameter_drift_convergence_and_share_ablation(analysis):
    out, _ = analysis
    result = json.loads((out / "analysis.json").read_text())
    ft = result["parameter_drift"]["rte"]["ft"]
    assert ft["updates"] == [1, 2, 3, 4, 5, 6] and ft["drift"][0] == 0.0
    assert ft["final"]["mean"] == ft["drift"][-1]
    curves = result["convergence"]["rte"]
    assert curves["ehft-bitfit (stage 1 17%)"]["stage2_starts"] == [1]
    assert curves["ehft-bitfit (stage 1 50%)"]["stage2_starts"] == [3]
    assert curves["lp-ft"]["loss"]["updates"] == [1, 2, 3, 4, 5, 6]
    shares = result["share_ablation"]["rte"]["methods"]["ehft-bitfit"]
    assert set(shares) == {"0.1667", "0.5"} and result["share_ablation"]["rte"]["metric"] == \
        "accuracy"
    for name in ("parameter_drift-rte.png", "convergence-rte.png", "share_ablation-rte.png",
                 "analysis.md"):
        assert (out / name).is_file()
    assert "| rte | ft |" in (out / "analysis.md").read_text()


@pytest.mark.slow
def test_only_makes_the_diagnostics_asked_for(runs, tmp_path):
    result = ehft("analyze", runs / "runs", "--out", tmp_path / "a", "--only", "convergence")
    written = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert "convergence" in written and "feature_drift" not in written
    assert json.loads(result.stdout.splitlines()[-1])["figures"] == ["convergence-rte.png"]


@pytest.mark.slow
def test_bad_inputs_are_clear_errors_and_leave_nothing_behind(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = ehft("analyze", empty, "--out", tmp_path / "a", check=False)
    assert result.returncode == 2 and "%s holds no run directories" % empty in result.stderr
    assert not (tmp_path / "a").exists()

    # the same run twice (a copy): every figure would count it twice
    shutil.copytree(runs / "runs" / "rte" / "ft", tmp_path / "copy" / "rte" / "ft")
    result = ehft("analyze", runs / "runs", tmp_path / "copy", "--out", tmp_path / "a",
                  "--only", "convergence", check=False)
    assert result.returncode == 2 and "are both ft seed 1 on rte" in result.stderr

    # the data a run was trained on is gone
    moved = tmp_path / "moved"
    shutil.copytree(runs / "runs" / "rte" / "ft", moved / "rte" / "ft")
    record = json.loads((moved / "rte/ft/seed1/run.json").read_text())
    record["commands"]["finetune"][1] = str(tmp_path / "nowhere")
    write_run_record(moved / "rte/ft/seed1", record["task"], record["config"],
                     record["commands"])
    result = ehft("analyze", moved, "--out", tmp_path / "a", "--only", "feature_drift",
                  check=False)
    assert result.returncode == 2
    assert "the data directory it was trained on, %s, is gone" % (tmp_path / "nowhere") \
        in result.stderr
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a.tmp-*"))

    result = ehft("analyze", runs / "runs", "--out", tmp_path / "a", "--examples", "0",
                  check=False)
    assert result.returncode == 2 and "--examples" in result.stderr
