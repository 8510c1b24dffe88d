"""--recipe fairseq: fairseq's published RoBERTa GLUE settings, checked against the YAML files
fairseq ships, and as they reach the generated fairseq-train command."""

from pathlib import Path

import pytest

from ehft_plugin.cli import build_parser
from ehft_plugin.errors import EhftError
from ehft_plugin.launcher import stage_command
from ehft_plugin.methods import resolve_method, split_updates, with_learning_rates
from ehft_plugin.recipes import FAIRSEQ_GLUE, apply_recipe, get_recipe

YAML_NAMES = {"sst2": "sst_2", "stsb": "sts_b"}


def _fairseq_yaml(task):
    import fairseq

    directory = Path(fairseq.__file__).parent / "examples/roberta/config/finetuning"
    path = directory / ("%s.yaml" % YAML_NAMES.get(task, task))
    if not path.is_file():
        pytest.skip("this fairseq install does not ship %s" % path.name)
    from omegaconf import OmegaConf

    return OmegaConf.load(path)


@pytest.mark.parametrize("task", sorted(FAIRSEQ_GLUE))
def test_table_matches_the_yaml_fairseq_ships(task):
    yaml = _fairseq_yaml(task)
    assert FAIRSEQ_GLUE[task] == (yaml.optimization.lr[0], yaml.dataset.batch_size,
                                  yaml.optimization.max_update, yaml.lr_scheduler.warmup_updates)
    assert yaml.dataset.max_tokens == 4400 and yaml.optimization.max_epoch == 10


def _command(task, *flags):
    opts = build_parser().parse_args(["train", "--method", "ft", "--data", "d", "--checkpoint",
                                      "c.pt", "--save-dir", "s", *flags])
    apply_recipe(opts, {"task": task})
    method = with_learning_rates(resolve_method(opts.method, 24), opts.lr_stage1, opts.lr_stage2)
    [updates] = split_updates(opts.total_updates, method)
    dims = {"encoder_layers": 24, "encoder_embed_dim": 1024, "encoder_ffn_embed_dim": 4096,
            "encoder_attention_heads": 16}
    cmd = stage_command(opts, method.stages[0], updates, "c.pt", "s/x", 1, "roberta_ehft_large",
                        dims, "accuracy")

    def last(flag):  # fairseq (argparse) takes the last occurrence
        return cmd[len(cmd) - 1 - cmd[::-1].index(flag) + 1]
    return last


@pytest.mark.parametrize("task", sorted(FAIRSEQ_GLUE))
def test_the_generated_command_carries_the_recipe(task):
    lr, batch_size, updates, warmup = FAIRSEQ_GLUE[task]
    value = _command(task, "--recipe", "fairseq")
    assert float(value("--lr")) == lr
    assert int(value("--batch-size")) == batch_size
    assert int(value("--max-update")) == int(value("--total-num-update")) == updates
    assert int(value("--warmup-updates")) == warmup
    assert value("--max-tokens") == "4400" and value("--max-epoch") == "10"
    assert value("--dropout") == "0.1" and value("--adam-betas") == "(0.9,0.98)"


def test_explicit_flags_override_the_recipe():
    value = _command("rte", "--recipe", "fairseq", "--lr-stage2", "3e-5", "--batch-size", "8",
                     "--", "--max-epoch", "3")
    assert float(value("--lr")) == 3e-5 and value("--batch-size") == "8"
    assert value("--max-epoch") == "3" and value("--max-update") == "2036"


def test_tasks_without_a_fairseq_recipe_are_named():
    with pytest.raises(EhftError, match=r"--recipe fairseq has no settings for task 'cb'; it "
                                        r"covers: cola, mnli, mrpc"):
        get_recipe("fairseq", "cb")


def test_without_a_recipe_total_updates_is_required():
    opts = build_parser().parse_args(["train", "--method", "ft", "--data", "d", "--checkpoint",
                                      "c.pt", "--save-dir", "s"])
    with pytest.raises(EhftError, match=r"--total-updates or --total-epochs is required"):
        apply_recipe(opts, {"task": "rte"})


RTE_META = {"task": "rte", "splits": {"train": {"examples": 2490}}}


@pytest.mark.parametrize("flags,updates", [
    (["--total-epochs", "10"], 10 * 78),  # ceil(2490 / 32) = 78 updates an epoch
    (["--total-epochs", "2.5", "--batch-size", "16"], 390),  # 156 an epoch
    (["--total-epochs", "1", "--recipe", "fairseq"], 156),  # epochs win over the recipe's 2036
    (["--recipe", "fairseq"], 2036),
])
def test_an_epoch_budget_becomes_updates_from_the_training_set_size(flags, updates):
    opts = build_parser().parse_args(["train", "--method", "ft", "--data", "d", "--checkpoint",
                                      "c.pt", "--save-dir", "s", *flags])
    apply_recipe(opts, RTE_META)
    assert opts.total_updates == updates


@pytest.mark.parametrize("flags,message", [
    (["--total-epochs", "0"], r"--total-epochs 0: expected > 0"),
    (["--total-epochs", "-1"], r"--total-epochs -1: expected > 0"),
    (["--total-epochs", "1", "--total-updates", "5"],
     r"give --total-updates or --total-epochs, not both"),
    (["--total-epochs", "1", "--batch-size", "0"], r"--batch-size 0: expected > 0"),
])
def test_bad_epoch_budgets_are_refused(flags, message):
    opts = build_parser().parse_args(["train", "--method", "ft", "--data", "d", "--checkpoint",
                                      "c.pt", "--save-dir", "s", *flags])
    with pytest.raises(EhftError, match=message):
        apply_recipe(opts, RTE_META)
