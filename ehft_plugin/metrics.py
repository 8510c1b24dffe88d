"""The official GLUE/SuperGLUE dev metrics as pure functions, and their fairseq logging.

Classification metrics are computed from a confusion matrix whose cells are
logged as sums, so they are exact over the whole dev set and the same whether
validation ran in one worker or many (sums reduce exactly). Correlations need
every prediction: the criterion logs them as lists during validation, and the
task marks such outputs as not summable so fairseq gathers them instead of
adding lists element-wise.

All values are logged as percentages (0-100), the scale of the leaderboards. This module
imports neither fairseq nor scipy at its top: `ehft train` reads the constant level from it
without them.
"""

from typing import Callable, Dict, Sequence

import numpy as np
import torch


# ---- pure metric functions -------------------------------------------------

def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def f1_for_class(cm: np.ndarray, k: int) -> float:
    """F1 of class k: 2tp / (2tp + fp + fn); 0 when the class never occurs (sklearn's default)."""
    tp = cm[k, k]
    fp = cm[:, k].sum() - tp
    fn = cm[k, :].sum() - tp
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else 0.0


def f1(cm: np.ndarray, positive: int = 1) -> float:
    return f1_for_class(cm, positive)


def macro_f1(cm: np.ndarray) -> float:
    return float(np.mean([f1_for_class(cm, k) for k in range(cm.shape[0])]))


def mcc(cm: np.ndarray) -> float:
    """Matthews correlation for any number of classes (Gorodkin's R_K, as sklearn)."""
    cm = cm.astype(np.float64)
    s, c = cm.sum(), np.trace(cm)
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    denominator = np.sqrt(s * s - p @ p) * np.sqrt(s * s - t @ t)
    return float((c * s - t @ p) / denominator) if denominator else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; 0 when either side is constant (no correlation is measurable)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx @ dx) * (dy @ dy))
    return float((dx @ dy) / denominator) if denominator else 0.0


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson on average ranks (ties share a rank, as scipy)."""
    from scipy.stats import rankdata  # here: importing scipy.stats takes most of a second

    return pearson(rankdata(x), rankdata(y))


# ---- metric name -> function of the gathered statistics ---------------------

def _mean(*fns):
    return lambda stats: float(np.mean([fn(stats) for fn in fns]))


_CM = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "mcc": mcc,
}
_CM["acc_f1"] = _mean(accuracy, f1)
_CM["acc_macro_f1"] = _mean(accuracy, macro_f1)

_CORRELATION = {
    "pearson": lambda pt: pearson(*pt),
    "spearman": lambda pt: spearman(*pt),
}
_CORRELATION["pearson_spearman"] = _mean(_CORRELATION["pearson"], _CORRELATION["spearman"])

METRIC_NAMES = sorted(list(_CM) + list(_CORRELATION))


def constant_level(name: str, class_counts: Sequence[int]) -> float:
    """The best value (in %) of metric `name` that predicting one class for every example
    reaches on a split with `class_counts` examples of each class: the majority class's share
    for accuracy; a correlation is 0 (a constant prediction carries no information; Pearson's
    is undefined, and no model is worse than that on average). What a head that learned
    nothing scores."""
    if name in _CORRELATION:
        return 0.0
    if name not in _CM:
        raise KeyError("unknown metric %r; expected one of: %s" % (name, ", ".join(METRIC_NAMES)))
    n = len(class_counts)
    best = 0.0
    for predicted in range(n):
        cm = np.zeros((n, n), dtype=np.int64)
        cm[:, predicted] = class_counts
        best = max(best, 100 * _CM[name](cm))
    return round(best, 4)


# ---- fairseq logging --------------------------------------------------------

CM_PREFIX = "_cm_"
PREDICTIONS_KEY = "_predictions"
TARGETS_KEY = "_targets"


def needs_predictions(name: str) -> bool:
    """Correlations need every prediction; they are computed on validation only."""
    return name in _CORRELATION


def confusion_matrix_logging(targets, predictions, num_classes: int) -> Dict[str, object]:
    """Summable logging-output entries: one count per (target, prediction) cell.

    Given torch tensors (the criterion's), the counts stay tensors on the tensors' device:
    reading them on the host between forward and backward would make the GPU wait every
    step. fairseq adds them across batches and workers as they are, and they are read when
    a metric is derived, at log intervals. Given sequences, plain ints.
    """
    keys = ["%s%d_%d" % (CM_PREFIX, i, j) for i in range(num_classes) for j in range(num_classes)]
    if torch.is_tensor(targets) and torch.is_tensor(predictions):
        # index_add_, not bincount: CUDA's bincount reads the input's range on the host
        cell = targets.view(-1) * num_classes + predictions.view(-1)
        cells = torch.zeros(num_classes * num_classes, dtype=torch.long, device=cell.device)
        cells.index_add_(0, cell, torch.ones_like(cell))
        return dict(zip(keys, cells.unbind()))
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets), np.asarray(predictions)), 1)
    return dict(zip(keys, (int(c) for c in cm.reshape(-1))))


def _confusion_matrix_from_meters(meters) -> np.ndarray:
    cells = {k[len(CM_PREFIX):]: meters[k].sum for k in meters.keys() if k.startswith(CM_PREFIX)}
    n = int(round(len(cells) ** 0.5))
    cm = np.zeros((n, n), dtype=np.int64)
    values = list(cells.values())
    # every derived metric (accuracy, F1, MCC ...) of one log reads the same counts: read once
    cached = getattr(meters, "_ehft_cells", None)
    if cached is not None and len(cached[0]) == len(values) and all(
            a is b for a, b in zip(cached[0], values)):
        counts = cached[1]
    else:
        counts = _host_values(values)
        try:
            meters._ehft_cells = (values, counts)
        except AttributeError:  # a plain dict (tests): no cache
            pass
    for key, count in zip(cells, counts):
        i, j = map(int, key.split("_"))
        cm[i, j] = count
    return cm


def _host_values(counts):
    """The counts as ints; device tensors among them copied to the host in one read."""
    on_device = [c for c in counts if torch.is_tensor(c)]
    if not on_device:
        return [int(c) for c in counts]
    device = on_device[0].device
    stacked = torch.stack([c.to(device, torch.long) if torch.is_tensor(c)
                           else torch.tensor(int(c), device=device) for c in counts])
    return [int(c) for c in stacked.tolist()]


def derived_metric(name: str) -> Callable:
    """A fairseq `log_derived` function computing metric `name` (in %) from the meters."""
    if name in _CM:
        fn = _CM[name]
        return lambda meters: round(100 * fn(_confusion_matrix_from_meters(meters)), 4)
    if name in _CORRELATION:
        fn = _CORRELATION[name]

        return lambda meters: round(
            100 * fn((meters[PREDICTIONS_KEY].values, meters[TARGETS_KEY].values)), 4
        )
    raise KeyError("unknown metric %r; expected one of: %s" % (name, ", ".join(METRIC_NAMES)))
