"""What a training step costs a GPU, counted on a CPU (benchmarks.step_ops): it reads device
values on the host at most twice and launches fewer kernels than stock fairseq's, and the
changes that get it there leave every number as fairseq computes it: the confusion counts,
the values the Trainer logs and returns, the clipping factor, the loss scaler's decisions
and the trained parameters."""

import argparse
import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from conftest import REPO
from fairseq.logging import meters as fairseq_meters
from fairseq.logging import metrics as fairseq_metrics
from fairseq.optim.dynamic_loss_scaler import DynamicLossScaler
from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin
from fairseq.trainer import Trainer

import ehft_plugin  # noqa: F401  (installs the patches)
from ehft_plugin.fairseq_compat import compat
from ehft_plugin import metrics as m
from ehft_plugin.criterions.sentence_prediction_ehft import SentencePredictionEhftCriterion

from benchmarks import step_ops


@pytest.mark.parametrize("classes", [2, 3])
def test_device_confusion_counts_equal_the_host_ones(classes):
    rng = np.random.default_rng(classes)
    targets, predictions = rng.integers(0, classes, 50), rng.integers(0, classes, 50)
    on_host = m.confusion_matrix_logging(targets, predictions, classes)
    counted = m.confusion_matrix_logging(torch.tensor(targets), torch.tensor(predictions),
                                         classes)
    assert {k: int(v) for k, v in counted.items()} == on_host
    assert all(v.dtype == torch.long for v in counted.values())


def test_the_counts_are_read_in_one_go():
    counter = step_ops.OpCounter()
    meters = {m.CM_PREFIX + "%d_%d" % (i, j): types.SimpleNamespace(sum=torch.tensor(i + j))
              for i in range(3) for j in range(3)}
    meters[m.CM_PREFIX + "0_0"].sum = 4  # an int among the tensors (a worker without a batch)
    plain, meters = meters, fairseq_meters.MetersDict()  # the type derived metrics are handed
    for key, meter in plain.items():
        meters.add_meter(key, meter, priority=0)
    with step_ops.HostReadCounter(counter), counter:
        cm = m._confusion_matrix_from_meters(meters)
        again = m._confusion_matrix_from_meters(meters)  # another metric of the same log
    assert cm.tolist() == again.tolist() == [[4, 1, 2], [1, 2, 3], [2, 3, 4]]
    assert sum(counter.syncs.values()) == 1
    meters[m.CM_PREFIX + "2_2"].sum = torch.tensor(9)  # a later log: a new sum tensor
    assert m._confusion_matrix_from_meters(meters)[2, 2] == 9


def _logging_outputs(batches=3):
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(batches):
        t, p = torch.tensor(rng.integers(0, 2, 8)), torch.tensor(rng.integers(0, 2, 8))
        out = {"loss": torch.tensor(float(rng.random() * 5)), "sample_size": 8,
               "nsentences": 8, "ntokens": 80}
        out.update(m.confusion_matrix_logging(t, p, 2))
        outs.append(out)
    return outs


def _trainer(amp=False, clip_norm=0.1):
    """What Trainer._reduce_and_log_stats reads of its Trainer."""
    task = types.SimpleNamespace(
        reduce_metrics=lambda outs, criterion: SentencePredictionEhftCriterion.reduce_metrics(
            outs))
    cfg = types.SimpleNamespace(common=types.SimpleNamespace(amp=amp),
                                optimization=types.SimpleNamespace(clip_norm=clip_norm))
    return types.SimpleNamespace(tpu=False, cfg=cfg, task=task, get_criterion=lambda: None,
                                 _warn_once=set())


@pytest.mark.parametrize("grad_norm", [torch.tensor(0.05), torch.tensor(3.0), None])
def test_the_logged_values_are_fairseqs(grad_norm):
    patched = Trainer._reduce_and_log_stats
    results = []
    for method in (patched.original, patched):
        with fairseq_metrics.aggregate(new_root=True) as outer:
            out = method(_trainer(), _logging_outputs(), 24, grad_norm)
            results.append((dict(out), {k: v for k, v in outer.get_smoothed_values().items()
                                        if k != "ups"}))
    assert results[0] == results[1]
    assert results[1][0]["sample_size"] == 24 and "loss" in results[1][0]


def test_the_returned_values_are_derived_only_when_read():
    counter = step_ops.OpCounter()
    with fairseq_metrics.aggregate(new_root=True), step_ops.HostReadCounter(counter), counter:
        out = Trainer._reduce_and_log_stats(_trainer(), _logging_outputs(), 24,
                                            torch.tensor(3.0))
        before = sum(counter.syncs.values())
        loss = out["loss"]
    assert before == 0 and sum(counter.syncs.values()) > 0 and loss > 0


def test_amp_still_logs_no_norm_when_it_is_not_finite():
    with fairseq_metrics.aggregate(new_root=True) as outer:
        Trainer._reduce_and_log_stats(_trainer(amp=True), _logging_outputs(), 24,
                                      torch.tensor(float("inf")))
        assert "gnorm" not in outer


class _Fp16:
    """What FP16Optimizer.clip_grad_norm reads of its optimizer: the fp32 gradients' norm
    (`norm`), the multiply factor and a real loss scaler."""

    def __init__(self, norm, scaler):
        self._multiply_factor = 1.0 / scaler.loss_scale
        self.scaler = scaler
        self.fp32_optimizer = types.SimpleNamespace(
            clip_grad_norm=lambda max_norm, aggregate_norm_fn=None: torch.tensor(norm))

    def _sync_fp16_grads_to_fp32(self):
        pass


@pytest.mark.parametrize("norm", [0.5 * 2 ** 7, 3.0 * 2 ** 7, 0.0, float("inf"), float("nan")])
@pytest.mark.parametrize("max_norm", [0.0, 1.0])
def test_fp16_clipping_and_loss_scaling_are_fairseqs(norm, max_norm):
    patched = _FP16OptimizerMixin.clip_grad_norm
    outcomes = []
    for method in (patched.original, patched):
        opt = _Fp16(norm, DynamicLossScaler(init_scale=2.0 ** 7))
        try:
            result = float(method(opt, max_norm))
        except OverflowError:
            result = "overflow"
        factor = opt._multiply_factor
        outcomes.append((result if result == result else "nan",
                         float(factor) if factor == factor else "nan", opt.scaler.loss_scale,
                         opt.scaler._last_overflow_iter))
    assert outcomes[0] == outcomes[1]


def test_fp16_clipping_reads_the_norm_once():
    counter = step_ops.OpCounter()
    with step_ops.HostReadCounter(counter), counter:
        _FP16OptimizerMixin.clip_grad_norm(_Fp16(5.0, DynamicLossScaler()), 1.0)
    assert sum(counter.syncs.values()) == 1


@pytest.mark.slow
def test_a_training_step_syncs_at_most_twice_where_stock_fairseq_syncs_more(tmp_path):
    """benchmarks.step_ops on a 2-layer model: fairseq's Trainer, fp16 and bf16."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.step_ops", "--shape", "tiny",
         "--steps", "1", "--warmup", "1", "--only", "plugin ft", "stock", "--out",
         str(tmp_path), "--label", "test"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    run = json.loads((tmp_path / "results-ops.json").read_text())["test"]
    rows = run["rows"]
    assert set(rows) == {"stock fairseq ft", "plugin ft", "plugin ft, bf16"}
    assert not rows["stock fairseq ft"]["plugin_loaded"] and rows["plugin ft"]["plugin_loaded"]
    for name in ("plugin ft", "plugin ft, bf16"):
        assert rows[name]["syncs_per_step"] <= step_ops.SYNC_TARGET, rows[name]["syncs"]
        assert rows[name]["updates"] == 1
    # the counter sees syncs: stock fairseq reads the loss, the norm, the padding ...
    assert rows["stock fairseq ft"]["syncs_per_step"] >= 5
    assert run["targets"]["syncs_ft"]["met"] and run["targets"]["syncs_ft_bf16"]["met"]
    assert "| plugin ft |" in (tmp_path / "RESULTS-ops.md").read_text()


def _fairseqs_own(monkeypatch):
    """Every patched fairseq name of host_syncs and step_launches back to fairseq's."""
    for owner, attribute in compat.PATCHED_NAMES:
        holder, current = compat._owner(owner, attribute)
        if hasattr(current, "original"):
            monkeypatch.setattr(holder, attribute, current.original)


def _trained(precision, extra=(), steps=3):
    from fairseq import checkpoint_utils

    from conftest import shared

    shared("glue", "RTE")
    from benchmarks import speed_cuda

    data = speed_cuda.prepare("large", "rte", None)
    args = argparse.Namespace(shape="tiny", batch_size=4)
    argv = step_ops.fairseq_argv(args, data, precision=precision) + list(extra)
    cfg, trainer = step_ops.build_trainer(argv)
    _, batches = checkpoint_utils.load_checkpoint(cfg.checkpoint, trainer)
    epoch = batches.next_epoch_itr(shuffle=False)
    for _ in range(steps):
        trainer.train_step([next(epoch)])
    return ({n: p.detach().clone() for n, p in trainer.model.named_parameters()},
            trainer.get_num_updates(), trainer.optimizer.scaler.loss_scale
            if getattr(trainer.optimizer, "scaler", None) else None)


# slow: on a new checkout its first run prepares RTE with `ehft prepare`, a process
@pytest.mark.slow
@pytest.mark.parametrize("precision,extra", [
    ("fp16", ["--clip-norm", "0.05"]),  # the flat fp32 buffer; clipping each step
    ("fp16", ["--fp16-no-flatten-grads", "--clip-norm", "0"]),
    ("bf16", ["--clip-norm", "0.05"]),  # no flat buffer, the foreach gradient norm
])
def test_training_is_fairseqs_to_the_bit(precision, extra, monkeypatch):
    # (an overflow's path through the Trainer is CUDA-only, `torch.tensor(0.0).cuda()`: the
    # scaler's side of it is test_fp16_clipping_and_loss_scaling_are_fairseqs)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)
    patched = _trained(precision, extra)
    _fairseqs_own(monkeypatch)
    original = _trained(precision, extra)
    assert patched[1:] == original[1:]
    assert patched[0].keys() == original[0].keys()
    for name, value in patched[0].items():
        assert torch.equal(value, original[0][name]), name


# slow: on a new checkout its first run prepares RTE with `ehft prepare`, a process
@pytest.mark.slow
def test_fp16_hands_its_scale_to_the_fused_kernel_instead_of_unscaling(monkeypatch):
    from ehft_plugin.optim.ehft_adamw import FusedAdamWWithScale

    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)
    flags = ["--clip-norm", "0.05"]  # the scale is then a tensor: loss scale over clipping

    def no_unscaling_pass(self):
        raise AssertionError("fairseq multiplied the gradients by 1 / scale itself")

    with monkeypatch.context() as refused:
        refused.setattr(_FP16OptimizerMixin, "_unscale_grads", no_unscaling_pass)
        with_scale = _trained("fp16", flags)
    monkeypatch.setattr(FusedAdamWWithScale, "supports_step_with_scale", False)
    unscaled = _trained("fp16", flags)
    assert with_scale[1:] == unscaled[1:]
    for name, value in with_scale[0].items():
        # fp32 masters equal to their rounding, the fp16 weights to one fp16 step
        assert torch.allclose(value.float(), unscaled[0][name].float(), rtol=2e-3,
                              atol=1e-6), name


def test_every_real_receiver_of_the_update_count_gets_it_once():
    from conftest import tiny_model

    model = tiny_model()
    calls = []

    class Counter(torch.nn.Module):  # a module that reads the count (as LayerDrop schedules do)
        def set_num_updates(self, n):
            calls.append(n)

    model.encoder.sentence_encoder.layers[1].counter = Counter()
    counter = step_ops.OpCounter()
    model.set_num_updates(7)
    assert calls == [7]
    with counter:
        model.set_num_updates(8)
    assert calls == [7, 8] and not counter.ops  # no tensor work either


def test_train_mode_is_set_where_any_module_differs():
    from conftest import tiny_model

    model = tiny_model().train()
    model.encoder.sentence_encoder.layers[0].eval()  # e.g. a user's frozen stratum
    model.train()
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    assert model.train() is model and all(m.training for m in model.modules())


# slow: on a new checkout its first run prepares RTE with `ehft prepare`, a process
@pytest.mark.slow
@pytest.mark.parametrize("multiple", [1, 8])
def test_batches_say_on_the_host_whether_they_hold_padding(multiple):
    from conftest import shared

    from ehft_plugin.tasks.glue_ehft import GlueEhftConfig, GlueEhftTask

    shared("glue", "RTE")
    from benchmarks import speed_cuda

    task = GlueEhftTask.setup_task(GlueEhftConfig(data=speed_cuda.prepare("large", "rte", None),
                                                  pad_to_multiple=multiple, seed=1,
                                                  batch_order="random"))
    dataset = task.load_dataset("valid")
    pad = task.source_dictionary.pad()
    seen = set()
    for size in (1, 2, 5):
        batches = task.get_batch_iterator(dataset, max_sentences=size, max_positions=512,
                                          disable_iterator_cache=True)
        for batch in batches.next_epoch_itr(shuffle=False):
            net_input = batch["net_input"]
            flag = net_input["has_pads"]
            assert isinstance(flag, bool)
            assert flag == bool(net_input["src_tokens"].eq(pad).any())
            seen.add(flag)
    assert seen == {True, False}  # batches of one example hold no padding (unless rounded up)


def test_the_flag_changes_nothing_the_model_computes():
    from conftest import tiny_batch, tiny_model

    model = tiny_model().eval()
    tokens = tiny_batch()
    unpadded = tokens[:1, :12]  # the first example fills the batch length: no padding
    for batch, has_pads in ((tokens, True), (unpadded, False)):
        expected, _ = model(batch, classification_head_name="head")
        given, _ = model(batch, classification_head_name="head", has_pads=has_pads)
        assert torch.equal(expected, given)
    assert model.encoder.sentence_encoder.known_has_pads is None  # not left for the next call
