"""Precision flags for every kind of stage: --bf16 trains on CPU (fairseq alone would look for
a TPU); on a GPU --fp16, --bf16 and --amp train every method, LoRA and prefix modules
included (skipped without one). --fp16 and --amp on CPU are refused: test_distributed.py."""

import json
import math

import pytest
import torch
from conftest import ehft, prepare_rte, stock_checkpoint, train_output

KINDS = ["ehft-bitfit", "ehft-lora", "ehft-prefix", "ehft-spafit-0-1-I", "ehft-lora-reserve"]
TINY = ["--max-positions", "128", "--dropout", "0", "--num-workers", "0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision")
    data = prepare_rte(tmp, rows=32)
    return {"data": data, "checkpoint": stock_checkpoint(data, tmp / "pretrained")}


def _train(setup, save_dir, method, *fairseq):
    result = ehft("train", "--method", method, "--data", setup["data"], "--checkpoint",
                  setup["checkpoint"], "--total-updates", "6", "--batch-size", "8",
                  "--stage1-ratio", "0.1", "--save-dir", save_dir, "--", *TINY, *fairseq)
    run_dir = save_dir / "rte" / method / "seed1"
    record = json.loads((run_dir / "run.json").read_text())
    dones = [json.loads((run_dir / s["name"] / "done.json").read_text())
             for s in record["config"]["stages"]]
    assert sum(d["updates"] for d in dones) == 6
    for done in dones:
        assert all(math.isfinite(float(r["valid_loss"])) for r in done["valid"])
    return train_output(result, run_dir), run_dir


def _trainable_keys(method):
    return {"ehft-bitfit": ".bias", "ehft-lora": "lora_", "ehft-prefix": "prefix",
            "ehft-spafit-0-1-I": ".bias", "ehft-lora-reserve": "lora_"}[method]


@pytest.mark.slow
@pytest.mark.parametrize("method", KINDS)
def test_bf16_on_cpu_trains_both_stages(setup, tmp_path, method):
    log, run_dir = _train(setup, tmp_path, method, "--cpu", "--bf16")
    assert log.count("--bf16 without torch_xla: bfloat16 on this machine's CPU") == 2
    # fairseq saves bfloat16 weights as float32; values a bfloat16 can hold show that stage 1
    # really trained its PEFT parameters in bfloat16
    model = torch.load(run_dir / "stage1" / "checkpoint_last.pt", weights_only=False)["model"]
    peft = [v for k, v in model.items() if _trainable_keys(method) in k]
    assert peft and all(torch.equal(v, v.bfloat16().float()) for v in peft)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("flag", ["--fp16", "--bf16", "--amp"])
@pytest.mark.parametrize("method", ["ft"] + KINDS)
def test_every_method_trains_in_reduced_precision_on_a_gpu(setup, tmp_path, method, flag):
    log, _ = _train(setup, tmp_path, method, flag)
    assert "--optimizer ehft_adamw: " in log and " on cuda" in log
    if flag == "--bf16":
        assert "bfloat16 on this machine's GPU" in log
