"""The hydra route: fairseq-hydra-train with the shipped configs (examples/config) trains what
the equivalent fairseq-train command trains, update for update, and takes the plugin's
options as overrides of existing keys."""

import json
import re
import sys

import pytest
import torch
from conftest import BIN, REPO, fairseq_train, prepare_rte, run, shared

CONFIGS = REPO / "examples" / "config"
TINY = {"encoder_layers": 2, "encoder_embed_dim": 16, "encoder_ffn_embed_dim": 32,
        "encoder_attention_heads": 4, "dropout": 0, "attention_dropout": 0}


@pytest.mark.slow
def test_the_shipped_configs_are_what_their_generator_writes():
    run([sys.executable, REPO / "scripts" / "hydra_configs.py", "--check"])


def test_superglue_configs_count_the_real_training_splits():
    sys.path.insert(0, str(REPO / "scripts"))
    from hydra_configs import SUPERGLUE_TRAIN_EXAMPLES

    from ehft_plugin.data.task_table import get_task

    for name, examples in SUPERGLUE_TRAIN_EXAMPLES.items():
        spec = get_task(name)
        folder = {"superglue-rte": "RTE"}.get(name, name.upper())
        path = shared("superglue") / folder / spec.splits["train"]
        if not path.exists():
            continue  # ../shared holds CB, COPA and RTE
        assert sum(1 for line in path.open(encoding="utf-8") if line.strip()) == examples


def test_the_model_config_lists_every_option_of_the_dataclass():
    from omegaconf import OmegaConf

    from ehft_plugin.models.roberta_ehft import RobertaEhftConfig

    listed = OmegaConf.load(CONFIGS / "model" / "roberta_ehft_large.yaml")
    fields = set(RobertaEhftConfig.__dataclass_fields__)
    assert set(listed) == fields
    assert {"peft", "head_type", "head_inner_dim", "attention_kernel"} <= fields


@pytest.fixture(scope="module")
def rte_bin(tmp_path_factory):
    return prepare_rte(tmp_path_factory.mktemp("rte"), rows=24)


def _hydra(config, data, save_dir, *overrides, check=True):
    tiny = ["model.%s=%s" % kv for kv in TINY.items()]
    return run([BIN / "fairseq-hydra-train", "--config-dir", CONFIGS, "--config-name", config,
                "common.user_dir=%s" % (REPO / "ehft_plugin"), "task.data=%s" % data,
                "checkpoint.save_dir=%s" % save_dir, "checkpoint.finetune_from_model=null",
                "common.cpu=true", "common.seed=1", "common.log_interval=1",
                "dataset.num_workers=0", "dataset.batch_size=8", "optimization.max_update=4",
                "lr_scheduler.warmup_updates=2", "task.max_positions=128", *tiny, *overrides],
               cwd=save_dir.parent, check=check)


def _losses(log):
    return [json.loads(m.group(1))["loss"] for m in
            re.finditer(r"train_inner.*? - (\{.*\})|\| train_inner \| (\{.*\})", log)
            if m.group(1)] or [json.loads(m.group(1))["loss"] for m in
                               re.finditer(r"\| train_inner \| (\{.*\})", log)]


def _params(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
@pytest.mark.parametrize("method,flags", [
    ("lora", ["--peft", "lora(r=32,alpha=32,targets=q+v)", "--lr", "5e-4"]),
    ("ft", ["--peft", "full", "--lr", "2e-5"]),
])
def test_hydra_train_matches_fairseq_train_update_for_update(rte_bin, tmp_path, method, flags):
    (tmp_path / "h").mkdir()
    hydra = _hydra("rte", rte_bin, tmp_path / "h" / "ck", "method=%s" % method)
    # the same run as fairseq-train flags: rte.yaml + ehft.yaml + the method, spelled out
    result, _ = fairseq_train(
        rte_bin, tmp_path / "f", "--arch", "roberta_ehft_large", "--head-type", "ehft",
        *flags, "--optimizer", "ehft_adamw", "--adam-betas", "(0.9,0.98)",
        "--adam-eps", "1e-06", "--weight-decay", "0.1", "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", "2", "--total-num-update", "4", "--required-batch-size-multiple", "1", "--max-tokens",
        "4400", "--max-epoch", "10", "--clip-norm", "0.0", "--best-checkpoint-metric",
        "accuracy", "--maximize-best-checkpoint-metric", "--encoder-embed-dim", "16")
    ours = _losses(hydra.stdout + hydra.stderr)
    theirs = _losses(result.stdout + result.stderr)
    assert len(ours) == 4 and ours == theirs
    a = _params(tmp_path / "h" / "ck" / "checkpoint_last.pt")
    b = _params(tmp_path / "f" / "checkpoint_last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_plugin_options_are_hydra_overrides(rte_bin, tmp_path):
    (tmp_path / "h").mkdir()
    # a plan with parentheses or commas is quoted for hydra's override grammar
    result = _hydra("rte", rte_bin, tmp_path / "h" / "ck",
                    "model.peft='0:bitfit(attn),1:lora(r=2)'", "model.head_type=fairseq",
                    "task.batch_order=random", "model.attention_kernel=fairseq")
    log = result.stdout + result.stderr
    assert "--peft 0:bitfit(targets=attn),1:lora(r=2,alpha=16,dropout=0,targets=q+v)" in log
    saved = torch.load(tmp_path / "h" / "ck" / "checkpoint_last.pt", map_location="cpu",
                       weights_only=False)["cfg"]
    assert saved["model"]["head_type"] == "fairseq"
    assert saved["model"]["arch"] == "roberta_ehft_large"
    assert saved["task"]["batch_order"] == "random"


@pytest.mark.slow
@pytest.mark.parametrize("override,status,message", [
    # hydra's own check, before the plugin is imported: its message, its exit status
    ("model.pefft=bitfit", 1, r"Could not override 'model.pefft'"),
    # the plugin's: one line naming the option and what is valid, exit status 2
    ("model.peft=5", 2, r"fairseq-hydra-train: error: unknown --peft '5'; expected "),
    ("model.peft='lora(r=0)'", 2, r"fairseq-hydra-train: error: lora r=0: r must be an "
                                  r"integer >= 1"),
    ("task.length_window=0", 2, r"fairseq-hydra-train: error: --length-window 0: expected "
                                r"an integer >= 1"),
])
def test_bad_overrides_name_the_key(rte_bin, tmp_path, override, status, message):
    (tmp_path / "h").mkdir()
    result = _hydra("rte", rte_bin, tmp_path / "h" / "ck", override, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == status, output[-3000:]
    assert re.search(message, output), output[-3000:]
    assert "Traceback" not in output
    if status == 2:
        assert re.search(message, result.stderr.strip().splitlines()[-1])
    assert not (tmp_path / "h" / "ck" / "checkpoint_last.pt").exists()
