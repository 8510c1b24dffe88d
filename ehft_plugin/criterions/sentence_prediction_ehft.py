"""`--criterion sentence_prediction_ehft`: the loss and the statistics behind the dev metrics.

Cross-entropy for classification, squared error for regression, cross-entropy
over the candidates' scores for ranking (COPA). The logging output carries
summable statistics (confusion-matrix cells) rather than lists, so fairseq can
reduce them across workers by addition and the metrics stay exact; only
regression validation needs every prediction, and then this criterion tells
fairseq to gather instead of sum (stock `sentence_prediction` sums such lists,
which concatenates them on one worker and adds them element-wise on many).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass
from fairseq.logging.meters import Meter

from ..data.task_table import RANKING, REGRESSION
from ..metrics import CM_PREFIX, PREDICTIONS_KEY, TARGETS_KEY, confusion_matrix_logging


class ConcatMeter(Meter):
    """Keeps every value it is given (dev-set predictions for correlations)."""

    def __init__(self):
        self.values = []

    def reset(self):
        self.values = []

    def update(self, values):
        self.values.extend(float(v) for v in values)

    def state_dict(self):
        return {"values": list(self.values)}

    def load_state_dict(self, state_dict):
        self.values = list(state_dict["values"])

    @property
    def smoothed_value(self) -> float:
        return len(self.values)


def candidate_logits(model, sample, kind, num_candidates, head_name):
    """Head outputs [batch, classes]; for ranking, one score per candidate input."""
    if kind != RANKING:
        logits, _ = model(**sample["net_input"], features_only=True,
                          classification_head_name=head_name)
        return logits
    scores = [
        model(**sample["net_input%d" % (i + 1)], features_only=True,
              classification_head_name=head_name)[0]
        for i in range(num_candidates)
    ]
    return torch.cat(scores, dim=1)


@dataclass
class SentencePredictionEhftConfig(FairseqDataclass):
    pass


@register_criterion("sentence_prediction_ehft", dataclass=SentencePredictionEhftConfig)
class SentencePredictionEhftCriterion(FairseqCriterion):
    def __init__(self, task):
        super().__init__(task)
        for attribute in ("kind", "num_classes", "num_choices"):
            if not hasattr(task, attribute):
                raise TypeError(
                    "--criterion sentence_prediction_ehft needs a task that knows its %s "
                    "(--task glue_ehft or a subclass); got %s" % (attribute, type(task).__name__)
                )
        self.kind = task.kind
        self.num_classes = task.num_choices if task.kind == RANKING else task.num_classes
        self.head_name = task.cfg.classification_head_name

    def forward(self, model, sample, reduce=True):
        logits = candidate_logits(model, sample, self.kind, self.num_classes, self.head_name)
        targets = sample["target"].view(-1)
        sample_size = targets.numel()
        logging_output = {
            "ntokens": sample["ntokens"],
            "nsentences": sample_size,
            "sample_size": sample_size,
        }
        if self.kind == REGRESSION:
            predictions = logits.view(-1).float()
            loss = F.mse_loss(predictions, targets.float(), reduction="sum")
            if not self.training:
                logging_output[PREDICTIONS_KEY] = predictions.detach().cpu().tolist()
                logging_output[TARGETS_KEY] = targets.float().cpu().tolist()
        else:
            lprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
            loss = F.nll_loss(lprobs, targets, reduction="sum")
            logging_output.update(confusion_matrix_logging(
                targets, logits.detach().argmax(dim=-1), self.num_classes))
        logging_output["loss"] = loss.data
        return loss, sample_size, logging_output

    def logging_outputs_can_be_summed(self) -> bool:
        # regression validation logs prediction lists, which must be gathered
        return self.training or self.kind != REGRESSION

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        loss_sum = sum(log.get("loss", 0) for log in logging_outputs)
        sample_size = sum(log.get("sample_size", 0) for log in logging_outputs)
        # base 2, as fairseq's own criterions log it
        metrics.log_scalar("loss", loss_sum / max(sample_size, 1) / math.log(2),
                           sample_size, round=3)
        keys = {k for log in logging_outputs for k in log if k.startswith(CM_PREFIX)}
        for key in sorted(keys):
            # ints, or device tensors added without reading them (no host sync per step)
            metrics.log_scalar_sum(key, sum(log.get(key, 0) for log in logging_outputs))
        for key in (PREDICTIONS_KEY, TARGETS_KEY):
            values = [v for log in logging_outputs for v in log.get(key, ())]
            if values:
                metrics.log_custom(ConcatMeter, key, values)
