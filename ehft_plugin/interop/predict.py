"""Predictions for raw GLUE/SuperGLUE files from a checkpoint trained with --task glue_ehft.

    from ehft_plugin.interop.predict import Predictor
    predictor = Predictor("checkpoints/checkpoint_best.pt")
    rows, _ = predictor.predict_file("RTE/test.tsv")       # [(id, label), ...]
    predictor.write_submission(rows, "RTE.tsv")

The submission format follows the benchmark: GLUE `index<TAB>prediction` TSV
with a header, SuperGLUE JSONL with `idx` and `label` (labels spelled as in the
raw files: strings, booleans or choice numbers).
"""

import json
import logging
import os

import numpy as np
import torch

from .. import metrics as metric_fns
from ..atomic import atomic_file
from ..criterions.sentence_prediction_ehft import candidate_logits
from ..data.binarize import encode_examples
from ..data.custom import task_spec
from ..data.readers import read_examples
from ..data.task_table import REGRESSION
from ..data.tokenisers import TokeniserSpec, build_encoder
from ..errors import CheckpointError

logger = logging.getLogger(__name__)


class Predictor:
    def __init__(self, checkpoint, data=None, batch_size=32, device="cpu"):
        import ehft_plugin
        from fairseq import checkpoint_utils

        from ..tasks.glue_ehft import GlueEhftTask

        ehft_plugin.register()  # glue_ehft, roberta_ehft and safe loading, for the checkpoint

        if not os.path.isfile(checkpoint):
            raise CheckpointError("%s: checkpoint not found" % checkpoint)
        overrides = {"data": os.path.abspath(data)} if data else None
        models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [checkpoint], arg_overrides=overrides
        )
        if not isinstance(task, GlueEhftTask):
            raise CheckpointError("%s was trained with --task %s; prediction needs --task glue_ehft"
                                  % (checkpoint, type(task).__name__))
        self.task, self.model = task, models[0].to(device).eval()
        self.device, self.batch_size = device, batch_size
        self.spec = task_spec(task.meta)
        tokenizer = TokeniserSpec(**task.meta["tokenizer"])
        self.encode = build_encoder(tokenizer.resolved(os.path.join(task.cfg.data, "tokenizer")))

    def _outputs(self, examples):
        """Model output per example, in file order: class/choice index or regression value."""
        from fairseq.data import ListDataset

        streams = encode_examples(examples, self.encode, self.task.dictionary, consumer=None)
        datasets = [ListDataset(list(s), np.array([len(t) for t in s])) for s in streams]
        dataset = self.task.build_dataset("predict", datasets)
        batches = self.task.get_batch_iterator(
            dataset, max_sentences=self.batch_size, ignore_invalid_inputs=False
        ).next_epoch_itr(shuffle=False)
        outputs = [None] * len(examples)
        with torch.no_grad():
            for sample in batches:
                sample = _to_device(sample, self.device)
                logits = candidate_logits(self.model, sample, self.task.kind,
                                          self.task.num_choices or self.task.num_classes,
                                          self.task.cfg.classification_head_name)
                values = logits.view(-1) if self.task.kind == REGRESSION else logits.argmax(-1)
                for i, value in zip(sample["id"].tolist(), values.tolist()):
                    outputs[i] = value
        return outputs

    def predict_examples(self, examples):
        """[(example id, prediction as written in a submission)] and the raw model outputs."""
        outputs = self._outputs(examples)
        if self.task.kind == REGRESSION:
            low, high = self.spec.regression_range  # submissions hold in-range scores
            rows = [(ex.example_id, float(min(max(v, low), high)))
                    for ex, v in zip(examples, outputs)]
        else:
            rows = [(ex.example_id, self.spec.labels[v]) for ex, v in zip(examples, outputs)]
        return rows, outputs

    def predict_file(self, path, labeled=False):
        """Predictions for a raw file; with `labeled`, also the official metrics (in %)."""
        # a labeled file is in the dev-file format (CoLA's has no header, its test file has)
        examples = read_examples(self.spec, path, "valid" if labeled else "test", labeled=labeled)
        rows, outputs = self.predict_examples(examples)
        scores = self.score([ex.label for ex in examples], outputs) if labeled else None
        return rows, scores

    def score(self, targets, outputs):
        """The task's official metrics (in %) of raw outputs, computed as during validation."""
        if self.task.kind == REGRESSION:
            meters = {metric_fns.PREDICTIONS_KEY: _Values(outputs),
                      metric_fns.TARGETS_KEY: _Values(targets)}
        else:
            counts = metric_fns.confusion_matrix_logging(
                [int(t) for t in targets], outputs, len(self.spec.labels))
            meters = {k: _Sum(v) for k, v in counts.items()}
        return {n: metric_fns.derived_metric(n)(meters) for n in self.task.metric_names}

    def write_submission(self, rows, out_path):
        """Write atomically: a failed run leaves no partial file."""
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        with atomic_file(out_path) as tmp, open(tmp, "w") as f:
            if self.spec.benchmark == "custom":
                _write_custom(f, self.spec.raw_format, rows)
            elif self.spec.raw_format == "jsonl":
                for example_id, label in rows:
                    f.write(json.dumps({"idx": int(example_id),
                                        "label": leaderboard_label(label)}) + "\n")
            else:
                f.write("index\tprediction\n")
                for example_id, label in rows:
                    f.write("%s\t%s\n" % (example_id, _tsv_value(label)))


def leaderboard_label(label):
    """A SuperGLUE label as the leaderboard reads it: BoolQ's and WiC's booleans as "true" /
    "false" (as jiant's submission formatter writes them), others as they are."""
    return str(label).lower() if isinstance(label, bool) else label


def _write_custom(f, fmt, rows):
    """A custom task's predictions in its files' format: id and prediction per line."""
    if fmt == "jsonl":
        for example_id, label in rows:
            f.write(json.dumps({"id": example_id, "prediction": label}) + "\n")
        return
    import csv

    writer = csv.writer(f, delimiter="," if fmt == "csv" else "\t", lineterminator="\n")
    writer.writerow(["id", "prediction"])
    for example_id, label in rows:
        writer.writerow([example_id, _tsv_value(label)])


def _tsv_value(label):
    return "%.3f" % label if isinstance(label, float) else label


class _Sum:
    def __init__(self, value):
        self.sum = value


class _Values:
    def __init__(self, values):
        self.values = list(values)


def _to_device(sample, device):
    from fairseq import utils

    return utils.move_to_cuda(sample) if device.startswith("cuda") else sample
