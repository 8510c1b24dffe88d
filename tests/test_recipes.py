"""--recipe fairseq: fairseq's published RoBERTa GLUE settings, checked against the YAML files
fairseq ships, and as they reach the generated fairseq-train command."""

import shlex
from pathlib import Path

import pytest
import torch

from ehft_plugin.cli import build_parser
from ehft_plugin.errors import EhftError
from ehft_plugin.train.config import RunConfig
from ehft_plugin.train.commands import stage_command
from ehft_plugin.train.methods import resolve_method, split_updates, with_learning_rates
from ehft_plugin.train.recipes import FAIRSEQ_GLUE, apply_recipe, get_recipe
from ehft_plugin.train.sweep import settings


def one_setting(opts):
    """The RunConfig of a command without a sweep, as `ehft train` reads it."""
    [setting] = settings(opts)
    return RunConfig.from_options(setting.options(opts))

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
    opts = apply_recipe(one_setting(opts), {"task": task})
    method = with_learning_rates(resolve_method(opts.method, 24), opts.lr_stage1, opts.lr_stage2)
    [updates] = split_updates(opts.total_updates, method)
    dims = {"encoder_layers": 24, "encoder_embed_dim": 1024, "encoder_ffn_embed_dim": 4096,
            "encoder_attention_heads": 16}
    config = opts.planned(method, None, dims=dims, arch="roberta_ehft_large", metric="accuracy")
    assert config.stages[0].updates == updates
    cmd = stage_command(config, config.stages[0], 1, "c.pt", "s/x")

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
    opts = one_setting(opts)
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
    opts = apply_recipe(one_setting(opts), RTE_META)
    assert opts.total_updates == updates


@pytest.mark.parametrize("flags,environ,updates", [
    # 78 batches of 32 an epoch: one update every --update-freq batches of each process
    (["--total-epochs", "2", "--", "--update-freq", "2"], {}, 2 * 39),
    (["--total-epochs", "1", "--", "--update-freq=3"], {}, 26),
    (["--total-epochs", "2"], {"WORLD_SIZE": "2", "RANK": "1"}, 2 * 39),  # torchrun, 2 ranks
    (["--total-epochs", "1", "--", "--update-freq", "2"], {"WORLD_SIZE": "4", "RANK": "0"},
     10),  # ceil(78 / 4) = 20 batches a rank, 10 updates
    (["--total-epochs", "1", "--", "--distributed-world-size", "3"], {}, 26),
])
def test_epochs_count_passes_whatever_the_accumulation_and_the_world(flags, environ, updates,
                                                                      monkeypatch):
    for key in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    opts = build_parser().parse_args(["train", "--method", "ft", "--data", "d", "--checkpoint",
                                      "c.pt", "--save-dir", "s", *flags])
    opts = apply_recipe(one_setting(opts), RTE_META)
    assert opts.total_updates == updates


@pytest.mark.parametrize("flags,message", [
    (["--total-epochs", "0"], r"--total-epochs 0: expected > 0"),
    (["--total-epochs", "1", "--", "--update-freq", "1,2"],
     r"--update-freq 1,2: epochs are counted in updates with one --update-freq"),
    (["--total-epochs", "1", "--", "--update-freq", "0"], r"--update-freq 0: epochs are"),
    (["--total-epochs", "-1"], r"--total-epochs -1: expected > 0"),
    (["--total-epochs", "1", "--total-updates", "5"],
     r"give --total-updates or --total-epochs, not both"),
    (["--total-epochs", "1", "--batch-size", "0"], r"--batch-size 0: expected > 0"),
])
def test_bad_epoch_budgets_are_refused(flags, message):
    opts = build_parser().parse_args(["train", "--method", "ft", "--data", "d", "--checkpoint",
                                      "c.pt", "--save-dir", "s", *flags])
    opts = one_setting(opts)
    with pytest.raises(EhftError, match=message):
        apply_recipe(opts, RTE_META)


# ---- --recipe ehft-paper: the EH-FT authors' settings ----------------------------------------

EHFT_TINY = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import prepare_rte, stock_checkpoint

    tmp = tmp_path_factory.mktemp("ehft-paper")
    data = prepare_rte(tmp, rows=40)  # batches of 32: 2 updates a pass
    return {"data": data, "checkpoint": stock_checkpoint(data, tmp / "pretrained"), "tmp": tmp}


def _dry_run(tiny, method, *flags, fairseq=()):
    """{stage name: fairseq-train command} and the other lines of a dry run."""
    from conftest import ehft

    out = ehft("train", "--dry-run", "--recipe", "ehft-paper", "--method", method, "--data",
               tiny["data"], "--checkpoint", tiny["checkpoint"], "--save-dir", tiny["tmp"] / "r",
               *flags, *EHFT_TINY, *fairseq).stdout.splitlines()
    commands = {line.split("--save-dir ")[1].split()[0].rsplit("/", 1)[1]: shlex.split(line)
                for line in out if "fairseq-train" in line and not line.startswith("ehft ")}
    return commands, out


def _last(cmd, flag):
    return cmd[len(cmd) - 1 - cmd[::-1].index(flag) + 1]


@pytest.mark.slow
@pytest.mark.parametrize("method, stage1_lr, stage1_plan", [
    ("ehft-bitfit", 5e-4, "bitfit"),
    ("ehft-lora", 5e-4, "lora(r=8,alpha=16,targets=q+k+v+out)"),
    ("ehft-prefix", 5e-3, "0-1:prefix(len=16)"),
    ("lp-ft", 1e-3, "head"),
])
def test_ehft_paper_two_stage_methods(tiny, method, stage1_lr, stage1_plan):
    commands, lines = _dry_run(tiny, method)
    stage1, stage2 = commands["stage1"], commands["stage2"]
    # RTE: 60 epochs in all, stage 1 a fixed 6 of them (2 updates a pass), its last head
    assert (_last(stage1, "--max-update"), _last(stage2, "--max-update")) == ("12", "108")
    assert float(_last(stage1, "--lr")) == stage1_lr and float(_last(stage2, "--lr")) == 1e-5
    assert _last(stage1, "--peft") == stage1_plan
    assert (_last(stage1, "--warmup-updates"), _last(stage2, "--warmup-updates")) == ("1", "11")
    assert "--patience" not in stage1
    assert any(line.startswith("ehft handover --stage1 ") and "/checkpoint_last.pt " in line
               for line in lines)
    for cmd in (stage1, stage2):
        assert _last(cmd, "--batch-size") == "32" and _last(cmd, "--clip-norm") == "0.1"
        assert _last(cmd, "--weight-decay") == "0.01" and "--no-decay-bias-norm" in cmd
        assert _last(cmd, "--head-init-std") == "0.005"
        assert _last(cmd, "--adam-betas") == "(0.9,0.98)"


@pytest.mark.slow
def test_ehft_paper_one_stage_methods(tiny):
    ft = _dry_run(tiny, "ft")[0]["finetune"]
    assert _last(ft, "--max-update") == "120" and float(_last(ft, "--lr")) == 1e-5
    mixout = _dry_run(tiny, "mixout")[0]["finetune"]
    assert _last(mixout, "--peft") == "mixout(p=0.7)" and "--mixout-head" in mixout
    for flag in ("--dropout", "--attention-dropout", "--activation-dropout", "--pooler-dropout"):
        assert _last(mixout, flag) == "0"
    assert "--mixout-head" not in ft and _last(ft, "--head-init-std") == "0.005"
    _, lines = _dry_run(tiny, "child-tuning-d")
    assert any(line.startswith("ehft child-mask --share 0.1 --fisher-clip 1 ") for line in lines)
    # a method written with its own arguments is run as written
    assert _last(_dry_run(tiny, "mixout(p=0.9)")[0]["finetune"], "--peft") == \
        "mixout(p=0.9)"


@pytest.mark.slow
def test_ehft_paper_explicit_flags_win(tiny):
    commands, _ = _dry_run(tiny, "ehft-bitfit", "--stage1-updates", "3", "--total-epochs", "5",
                           "--lr-stage1", "1e-3", fairseq=("--clip-norm", "1.0"))
    assert (_last(commands["stage1"], "--max-update"), _last(commands["stage2"], "--max-update")) \
        == ("3", "10")
    assert float(_last(commands["stage1"], "--lr")) == 1e-3
    assert _last(commands["stage2"], "--clip-norm") == "1.0"


def test_ehft_paper_stage2_rate_and_epochs_by_task():
    from ehft_plugin.train.launcher import resolve_method

    for task, epochs, lr in (("wic", 40, 3e-5), ("cb", 400, 1e-5), ("stsb", 20, 1e-5)):
        opts = build_parser().parse_args(["train", "--method", "ehft-bitfit", "--data", "d",
                                          "--checkpoint", "c.pt", "--save-dir", "s",
                                          "--recipe", "ehft-paper"])
        opts = apply_recipe(one_setting(opts), {"task": task,
                                                "splits": {"train": {"examples": 320}}},
                            resolve_method("ehft-bitfit", 12))
        assert opts.lr_stage2 == lr and opts.stage1_epochs == epochs // 10
        assert opts.total_updates == (epochs - epochs // 10) * 10  # 10 updates a pass


@pytest.mark.slow
def test_ehft_paper_reaches_the_model_and_the_optimizer(tiny):
    """--head-init-std draws the new head's weights from N(0, 0.005); --no-decay-bias-norm
    leaves every tensor of fewer than 2 dimensions undecayed; --clip-norm 0.1; --mixout-head
    mixes the head too."""
    from fairseq import optim

    from ehft_plugin.peft.mixout import MixoutLinear
    from ehft_plugin.train.rebuild import Built

    built = Built(_dry_run(tiny, "mixout")[0]["finetune"], "test", seed=1)
    head = built.head
    assert isinstance(head.dense, MixoutLinear) and isinstance(head.out_proj, MixoutLinear)
    assert head.dense.p == 0.7 and built.cfg.model.dropout == 0.0
    weights = torch.cat([head.dense.weight.flatten(), head.out_proj.weight.flatten()])
    assert weights.std().item() == pytest.approx(0.005, rel=0.05)
    assert weights.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert built.cfg.optimization.clip_norm == 0.1
    params = [p for p in built.model.parameters() if p.requires_grad]
    optimizer = optim.build_optimizer(built.cfg.optimizer, params)
    groups = optimizer.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert all(p.dim() >= 2 for p in groups[0]["params"])
    assert all(p.dim() < 2 for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(params)
    biases = {n for n, p in built.model.named_parameters() if p.requires_grad and p.dim() < 2}
    assert any(n.endswith("layer_norm.weight") for n in biases)
    assert all(n.endswith(("bias", "weight")) for n in biases)
    # --head-init-std given on its own (FT under the recipe, overridden after "--")
    plain = Built(_dry_run(tiny, "ft", fairseq=("--head-init-std", "0.5"))[0]["finetune"], "t",
                  seed=1)
    assert plain.head.dense.weight.std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.slow
def test_the_fisher_pass_clips_each_tensor(tiny):
    from ehft_plugin.peft.child_tuning import fisher_information
    from ehft_plugin.train.rebuild import Built

    command = _dry_run(tiny, "ft")[0]["finetune"]
    built = Built(command, "test", seed=1).load(str(tiny["checkpoint"]), strict=False)
    torch.manual_seed(1)
    plain = fisher_information(built.model, built.criterion, built.batches("train", 40, 8))
    torch.manual_seed(1)
    clipped = fisher_information(built.model, built.criterion, built.batches("train", 40, 8),
                                 clip=1e-3)
    # each batch's gradient of a tensor has norm <= 1e-3, so its mean square sums to <= 1e-6
    assert all(f.sum().item() <= 1e-6 * (1 + 1e-4) for f in clipped.values())
    assert any(f.sum().item() > 1e-6 for f in plain.values())


@pytest.mark.slow
def test_ehft_paper_refuses_a_task_the_authors_did_not_run(tiny, tmp_path):
    from conftest import ehft, gpt2_flags, shared, subset

    raw = subset(shared("glue", "SST-2"), tmp_path / "raw", rows=8)
    ehft("prepare", "sst2", "--raw-dir", raw, "--out-dir", tmp_path / "bin", *gpt2_flags())
    result = ehft("train", "--recipe", "ehft-paper", "--method", "ehft-bitfit", "--data",
                  tmp_path / "bin", "--checkpoint", tiny["checkpoint"], "--save-dir",
                  tmp_path / "runs", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ehft train: error: --recipe ehft-paper: the EH-FT authors did not run task 'sst2'; it "
        "covers: boolq, cb, cola, copa, mrpc, qnli, rte, stsb, superglue-rte, wic"]
    assert not (tmp_path / "runs").exists()
