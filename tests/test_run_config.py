"""`ehft train` plans each setting as a frozen RunConfig: read from the options once, filled
by its recipe as a new value, then planned into stages that the run and --dry-run share."""

import dataclasses

import pytest

from ehft_plugin.cli import build_parser
from ehft_plugin.train.config import RunConfig
from ehft_plugin.train.launcher import plan_runs
from ehft_plugin.train.recipes import apply_recipe

META = {"task": "rte", "metrics": ["accuracy"], "splits": {"train": {"examples": 2490}}}
DIMS = {"arch": "roberta_base", "encoder_layers": 12, "encoder_embed_dim": 768}


def _options(*flags):
    return build_parser().parse_args(["train", "--data", "d", "--checkpoint", "c.pt",
                                      "--save-dir", "s", *flags])


def test_a_config_is_frozen_and_a_recipe_returns_a_new_one():
    config = RunConfig.from_options(_options("--method", "ft", "--recipe", "fairseq"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.total_updates = 5
    filled = apply_recipe(config, META)
    assert config.total_updates is None and config.fairseq_args == ()  # unchanged
    assert filled.total_updates == 2036 and filled.batch_size == 16
    assert "--max-tokens" in filled.fairseq_args and "--dropout" in filled.fairseq_args


def test_planning_lays_out_each_settings_stages_and_the_record_run_json_holds():
    opts = _options("--method", "ehft-bitfit", "ft", "--total-updates", "100",
                    "--stage1-updates", "30", "--seeds", "1", "2", "--", "--cpu")
    ehft, ft = plan_runs(opts, META, DIMS, "roberta_ehft_base")
    assert [(s.name, s.updates, s.budget is not None) for s in ehft.stages] == [
        ("stage1", 30, True), ("stage2", 100, False)]
    assert [(s.name, s.updates) for s in ft.stages] == [("finetune", 100)]
    assert ehft.seeds == (1, 2) and ehft.metric == "accuracy" and ehft.task == "rte"
    record = ehft.record(seed=2).to_dict()
    assert record["seed"] == 2 and record["updates"] == [30, 100]
    assert record["stage1"] == {"rule": "updates", "updates": 30, "head": "last"}
    assert [s["name"] for s in record["stages"]] == ["stage1", "stage2"]
    assert record["fairseq_args"] == ["--cpu"]
    assert opts.method == ["ehft-bitfit", "ft"]  # the options themselves are left as given


def test_run_json_reads_back_as_the_typed_config_it_was_written_from(tmp_path):
    from ehft_plugin.train.rundir import Run, RunError, write_run_record

    opts = _options("--method", "child-tuning-d(p=0.1,fisher_clip=1.0)", "--total-updates",
                    "100", "--", "--cpu")
    [config] = plan_runs(opts, META, DIMS, "roberta_ehft_base")
    record = config.record(seed=3)
    write_run_record(str(tmp_path), "rte", record, {"finetune": ["fairseq-train"]})
    run = Run.read(str(tmp_path))
    assert run.config == record and run.seed == 3
    assert (run.config.stages[0].child_share, run.config.stages[0].fisher_clip) == (0.1, 1.0)
    # what every run.json holds is required, with the file named
    (tmp_path / "run.json").write_text('{"task": "rte", "config": {"seed": 1, "stages": []}}')
    with pytest.raises(RunError, match=r"run.json: not a run record of ehft train \(missing "
                                       r"or wrong 'method'\)"):
        Run.read(str(tmp_path))
    (tmp_path / "run.json").write_text('{"task": "rte", "commands": {}}')
    with pytest.raises(RunError, match=r"run.json: not a run record of ehft train \(missing "
                                       r"or wrong 'config'\)"):
        Run.read(str(tmp_path))


def test_every_committed_run_record_reads_back_to_the_same_bytes():
    import json

    from conftest import REPO

    from ehft_plugin.train.rundir import RecordedConfig

    configs = [json.loads(line)["files"]["run.json"]["config"]
               for path in (REPO / "benchmarks").rglob("records.jsonl")
               for line in open(path) if '"run.json"' in line]
    assert len(configs) > 400
    for config in configs:
        assert json.dumps(RecordedConfig.from_dict(config).to_dict()) == json.dumps(config)
