"""`--optimizer ehft_adamw`: the same updates as AdamW written out from the paper, whichever
kernel steps; fairseq's `adam` agrees up to where eps enters; bad flags are refused before
anything is written; the log says which kernels run."""

import sys
import types

import pytest
import torch
from conftest import fairseq_train, prepare_rte

from ehft_plugin.fairseq_compat.kernels import apex_fused_adam
from ehft_plugin.optim.ehft_adamw import EhftAdamW, EhftAdamWConfig, choose_kernel, fused_on_cpu

BETAS, EPS, LR, DECAY = (0.9, 0.98), 1e-6, 1e-2, 0.1


def reference_adamw(params, grads_per_step):
    """AdamW, Algorithm 2 of Loshchilov & Hutter (2019), eps on the bias-corrected sqrt(v)."""
    params = [p.clone().double() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            g = g.double()
            m[i] = BETAS[0] * m[i] + (1 - BETAS[0]) * g
            v[i] = BETAS[1] * v[i] + (1 - BETAS[1]) * g * g
            m_hat, v_hat = m[i] / (1 - BETAS[0] ** t), v[i] / (1 - BETAS[1] ** t)
            params[i] = params[i] * (1 - LR * DECAY) - LR * m_hat / (v_hat.sqrt() + EPS)
    return params


def _steps(optimizer, params, grads_per_step):
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
    return params


def _problem(seed=0, steps=12):
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 2)]
    params = [torch.randn(s, generator=generator) for s in shapes]
    grads = [[torch.randn(s, generator=generator) * 10 ** (i % 3 - 1) for s in shapes]
             for i in range(steps)]
    return params, grads


def _config(kernel):
    return EhftAdamWConfig(adam_betas="(0.9,0.98)", adam_eps=EPS, weight_decay=DECAY,
                           adamw_kernel=kernel, lr=[LR])


@pytest.mark.parametrize("kernel", ["auto", "foreach", "loop", "fused"])
def test_every_kernel_makes_the_reference_adamw_updates(kernel):
    start, grads = _problem()
    params = [p.clone().requires_grad_() for p in start]
    optimizer = EhftAdamW(_config(kernel), params)
    assert optimizer.kernel == ("fused" if kernel == "auto" else kernel)  # CPU, torch >= 2.4
    got = _steps(optimizer, params, grads)
    for p, want in zip(got, reference_adamw(start, grads)):
        assert torch.allclose(p.detach().double(), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 8.0, torch.tensor(0.25)])
def test_the_fused_kernel_divides_by_fairseqs_scale_as_it_steps(scale):
    # fairseq's fp16 optimizers pass the factor the gradients still carry (loss scale over
    # clipping) instead of multiplying every gradient by its inverse first
    start, grads = _problem(seed=2, steps=4)
    unscaled = [p.clone().requires_grad_() for p in start]
    scaled = [p.clone().requires_grad_() for p in start]
    plain = EhftAdamW(_config("fused"), unscaled)
    ours = EhftAdamW(_config("fused"), scaled)
    assert ours.supports_step_with_scale and not EhftAdamW(
        _config("foreach"), [p.clone().requires_grad_() for p in start]).supports_step_with_scale
    for step in grads:
        for p, q, g in zip(unscaled, scaled, step):
            p.grad, q.grad = g.clone(), g.clone() * scale
        plain.step()
        ours.step(scale=scale)
    for p, q in zip(unscaled, scaled):
        if not torch.is_tensor(scale) and scale == 1.0:
            assert torch.equal(p, q)
        else:  # g * s / s: the same to float32's rounding
            assert torch.allclose(p, q, rtol=1e-6, atol=1e-7)
    assert getattr(ours.optimizer, "grad_scale", None) is None  # as GradScaler finds it


def test_fairseq_adam_differs_only_where_eps_enters():
    from fairseq.optim.adam import FairseqAdam, FairseqAdamConfig

    start, grads = _problem(seed=1)
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    _steps(EhftAdamW(_config("foreach"), ours), ours, grads)
    cfg = FairseqAdamConfig(adam_betas="(0.9,0.98)", adam_eps=EPS, weight_decay=DECAY, lr=[LR])
    _steps(FairseqAdam(cfg, theirs), theirs, grads)
    for a, b in zip(ours, theirs):
        # eps / sqrt(v) is ~1e-5 here at most: the updates agree to that relative order
        assert torch.allclose(a, b, atol=LR * 12 * 1e-4, rtol=0)
        assert not torch.equal(a, b)  # the two formulas are not the same code path


def test_auto_prefers_apex_then_torch_fused_and_foreach_on_an_old_torchs_cpu():
    assert choose_kernel("auto", cuda=True, apex_available=True) == "apex"
    assert choose_kernel("auto", cuda=True, apex_available=False) == "fused"
    assert choose_kernel("auto", cuda=False, apex_available=True, cpu_fused=True) == "fused"
    assert choose_kernel("auto", cuda=False, apex_available=False, cpu_fused=False) == "foreach"
    assert fused_on_cpu("2.4.0") and fused_on_cpu("2.13.0+cpu") and not fused_on_cpu("2.3.1")
    assert choose_kernel("loop", cuda=True, apex_available=True) == "loop"
    with pytest.raises(ValueError, match="apex is not importable"):
        choose_kernel("apex", cuda=True, apex_available=False)
    with pytest.raises(ValueError, match="parameters on CUDA"):
        choose_kernel("apex", cuda=False, apex_available=True)


def test_only_nvidia_apex_counts_not_the_unrelated_pypi_package(monkeypatch):
    # the PyPI package named `apex` imports as `apex` but has no apex.optimizers
    monkeypatch.setitem(sys.modules, "apex", types.ModuleType("apex"))
    assert apex_fused_adam() is None
    nvidia = types.ModuleType("apex.optimizers")
    nvidia.FusedAdam = type("FusedAdam", (), {})
    monkeypatch.setitem(sys.modules, "apex.optimizers", nvidia)
    assert apex_fused_adam() is nvidia.FusedAdam


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return prepare_rte(tmp_path_factory.mktemp("optim"), rows=24)


@pytest.mark.slow
def test_fairseq_train_logs_its_kernels_and_resumes_exactly(data, tmp_path):
    flags = ["--optimizer", "ehft_adamw", "--adam-betas", "(0.9,0.98)", "--weight-decay", "0.1"]
    result, _ = fairseq_train(data, tmp_path / "straight", *flags, updates=6)
    log = result.stdout + result.stderr
    assert "--optimizer ehft_adamw: torch.optim.AdamW(fused) on cpu" in log
    assert "LayerNorm kernels: " in log and "(NVIDIA apex not importable)" in log
    fairseq_train(data, tmp_path / "resumed", *flags, updates=3)
    fairseq_train(data, tmp_path / "resumed", *flags, updates=6)  # from checkpoint_last
    straight = torch.load(tmp_path / "straight" / "checkpoint_last.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=False)
    assert resumed["optimizer_history"][-1]["optimizer_name"] == "EhftAdamW"
    for key, value in straight["model"].items():
        assert torch.allclose(value, resumed["model"][key], atol=1e-6), key


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--adam-betas", "(0.9,1.5)"], "--adam-betas '(0.9,1.5)': expected two numbers in [0, 1)"),
    (["--adam-betas", "0.9"], "--adam-betas '0.9': expected two numbers in [0, 1)"),
    (["--adam-eps", "0"], "--adam-eps 0.0: expected a number > 0"),
    (["--weight-decay", "-1"], "--weight-decay -1.0: expected a number >= 0"),
    (["--adamw-kernel", "apex"], "--adamw-kernel apex needs NVIDIA apex"),
])
def test_bad_optimizer_flags_are_refused_before_anything_is_written(data, tmp_path, flags,
                                                                     message):
    result, _ = fairseq_train(data, tmp_path / "run", "--optimizer", "ehft_adamw", *flags,
                              check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "run").exists()
