"""Official metrics: checked against sklearn/scipy, and exact whatever the number of workers."""

import numpy as np
import pytest
from fairseq import metrics as fairseq_metrics
from scipy import stats
from sklearn import metrics as sk

from ehft_plugin import metrics as m
from ehft_plugin.criterions.sentence_prediction_ehft import SentencePredictionEhftCriterion


def _confusion(y, p, k):
    return sk.confusion_matrix(y, p, labels=list(range(k)))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("classes", [2, 3])
def test_classification_metrics_match_sklearn(seed, classes):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, classes, 300), rng.integers(0, classes, 300)
    p[:100] = y[:100]  # some signal
    cm = _confusion(y, p, classes)
    assert m.accuracy(cm) == pytest.approx(sk.accuracy_score(y, p), abs=1e-12)
    assert m.mcc(cm) == pytest.approx(sk.matthews_corrcoef(y, p), abs=1e-12)
    assert m.macro_f1(cm) == pytest.approx(sk.f1_score(y, p, average="macro"), abs=1e-12)
    if classes == 2:
        assert m.f1(cm) == pytest.approx(sk.f1_score(y, p), abs=1e-12)


def test_degenerate_predictions_give_sklearns_values():
    y, p = np.array([0, 1, 1, 0]), np.zeros(4, dtype=int)
    cm = _confusion(y, p, 2)
    assert m.mcc(cm) == sk.matthews_corrcoef(y, p) == 0.0
    assert m.f1(cm) == sk.f1_score(y, p, zero_division=0) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 200).astype(float)  # STS-B-like scores with many ties
    p = y + rng.normal(0, 1.5, 200)
    p[:20] = 2.0
    assert m.pearson(p, y) == pytest.approx(stats.pearsonr(p, y)[0], abs=1e-12)
    assert m.spearman(p, y) == pytest.approx(stats.spearmanr(p, y)[0], abs=1e-12)


def test_constant_predictions_have_zero_correlation():
    assert m.pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]) == 0.0


def _task(kind):
    """A real glue_ehft task object over metadata only (no files needed to reduce metrics)."""
    from fairseq.data import Dictionary

    from ehft_plugin.tasks.glue_ehft import GlueEhftConfig, GlueEhftTask

    metric_names = {"classification": ["mcc", "acc_f1", "accuracy", "f1"],
                    "regression": ["pearson_spearman", "pearson", "spearman"]}[kind]
    meta = {"kind": kind, "num_classes": 2 if kind == "classification" else 1, "choices": 0,
            "metrics": metric_names}
    return GlueEhftTask(GlueEhftConfig(data="unused"), Dictionary(), None, meta)


def _logging_outputs(kind, targets, predictions, training=False):
    """Logging outputs as the criterion writes them, one per batch of 7."""
    outs = []
    for s in range(0, len(targets), 7):
        t, p = targets[s:s + 7], predictions[s:s + 7]
        log = {"loss": 1.0, "sample_size": len(t), "nsentences": len(t), "ntokens": 10 * len(t)}
        if kind == "classification":
            log.update(m.confusion_matrix_logging(t, p, 2))
        elif not training:
            log[m.PREDICTIONS_KEY], log[m.TARGETS_KEY] = list(map(float, p)), list(map(float, t))
        outs.append(log)
    return outs


def _reduce(task, logging_outputs):
    with fairseq_metrics.aggregate(new_root=True) as agg:
        task.reduce_metrics(logging_outputs, SentencePredictionEhftCriterion(task))
        return agg.get_smoothed_values()


def _sum_like_fairseq(worker_outputs):
    """What fairseq's _fast_stat_sync_sum does with summable outputs of N workers."""
    merged = [log for logs in worker_outputs for log in logs]
    return [{k: sum(log[k] for log in merged) for k in merged[0]}]


def _gather_like_fairseq(worker_outputs):
    """What fairseq's _all_gather_list_sync does: concatenate every worker's outputs."""
    return [log for logs in worker_outputs for log in logs]


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_classification_metrics_are_exact_over_workers(workers):
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 101), rng.integers(0, 2, 101)
    task = _task("classification")
    logs = _logging_outputs("classification", y, p)
    shards = [logs[i::workers] for i in range(workers)]
    reduced = _reduce(task, _sum_like_fairseq(shards))
    assert reduced["mcc"] == pytest.approx(100 * sk.matthews_corrcoef(y, p), abs=1e-4)
    assert reduced["accuracy"] == pytest.approx(100 * sk.accuracy_score(y, p), abs=1e-4)
    assert reduced["f1"] == pytest.approx(100 * sk.f1_score(y, p), abs=1e-4)
    assert reduced["acc_f1"] == pytest.approx(
        50 * (sk.accuracy_score(y, p) + sk.f1_score(y, p)), abs=1e-4)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_regression_metrics_are_exact_over_workers(workers):
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 5, 101)
    p = y + rng.normal(0, 1, 101)
    task = _task("regression")
    criterion = SentencePredictionEhftCriterion(task)
    criterion.eval()
    assert not criterion.logging_outputs_can_be_summed()  # fairseq must gather, not sum
    criterion.train()
    assert criterion.logging_outputs_can_be_summed()
    logs = _logging_outputs("regression", y, p)
    shards = [logs[i::workers] for i in range(workers)]
    reduced = _reduce(task, _gather_like_fairseq(shards))
    assert reduced["pearson"] == pytest.approx(100 * stats.pearsonr(p, y)[0], abs=1e-4)
    assert reduced["spearman"] == pytest.approx(100 * stats.spearmanr(p, y)[0], abs=1e-4)


def test_training_reduction_of_regression_logs_no_correlation():
    task = _task("regression")
    reduced = _reduce(task, _logging_outputs("regression", [1.0, 2.0], [1.0, 2.0], training=True))
    assert "pearson" not in reduced and "loss" in reduced
