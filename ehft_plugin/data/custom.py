"""A task of your own without code: `ehft prepare custom` builds its TaskSpec from flags
(CSV, TSV or JSONL files; the text field or pair; the label field; classification or
regression; the metric) and writes it into ehft_task.json, so that every later step
(fairseq-train --task glue_ehft, ehft train, report, predict, the exports) reads the task
from the data directory instead of the built-in table.

The label set of a classification task is the sorted set of train's labels (or --labels, in
the order given), so a label id means the same whatever the order of the rows. A dev or test
label outside it is an error naming its file and line, not a class the head never saw.
"""

import os
from dataclasses import replace

from ..errors import EhftError, RawDataError
from .task_table import CLASSIFICATION, REGRESSION, TASKS, TaskSpec, get_task

FORMATS = ("csv", "tsv", "jsonl")
CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1", "mcc", "acc_f1")
REGRESSION_METRICS = ("pearson", "spearman", "pearson_spearman")
SPEC_KEY = "custom_task"  # in ehft_task.json: the spec of a task prepared with `custom`


class CustomTaskError(EhftError):
    """A custom task's flags that do not describe its files."""


def file_format(path, given=None):
    if given:
        return given
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    ext = {"json": "jsonl", "ndjson": "jsonl"}.get(ext, ext)
    if ext not in FORMATS:
        raise CustomTaskError("--train %s: cannot tell the format from the extension; pass "
                              "--format csv, tsv or jsonl" % path)
    return ext


def build_spec(name, train, dev, text_fields, label_field, test=None, regression=False,
               labels=None, metric=None, id_field=None, fmt=None):
    """The TaskSpec of a custom task, its label set read from `train` unless given."""
    if name.lower() in TASKS or name.lower() in ("custom",):
        raise CustomTaskError("--name %s: the name of a built-in task; choose another" % name)
    if not name or any(c in name for c in "/\\ \t"):
        raise CustomTaskError("--name %r: expected a name without spaces or slashes" % name)
    if len(text_fields) not in (1, 2):
        raise CustomTaskError("--text-fields: expected one field or a pair, got %d"
                              % len(text_fields))
    kind = REGRESSION if regression else CLASSIFICATION
    allowed = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    metric = metric or allowed[0]
    if metric not in allowed:
        raise CustomTaskError("--metric %s: expected one of %s for %s" % (
            metric, ", ".join(allowed), "regression" if regression else "classification"))
    if regression and labels:
        raise CustomTaskError("--labels: a regression task has no label set")
    fmt = file_format(train, fmt)
    splits = {"train": os.path.abspath(train), "valid": os.path.abspath(dev)}
    for flag, path in (("--train", train), ("--dev", dev), ("--test", test)):
        if path is not None and not os.path.isfile(path):
            raise CustomTaskError("%s %s: file not found" % (flag, path))
    metrics = (metric,) + (("accuracy",) if not regression and metric != "accuracy" else ())
    if regression and metric != "pearson_spearman":
        metrics += tuple(m for m in ("pearson", "spearman") if m != metric)
    spec = TaskSpec(name.lower(), "custom", fmt, splits, tuple(text_fields), label_field,
                    kind=kind, metrics=metrics, id_field=id_field or "index",
                    paper_metric=metric, test_file=os.path.abspath(test) if test else "")
    if not regression:
        spec = replace(spec, labels=tuple(labels) if labels else _train_labels(spec))
        if len(spec.labels) < 2:
            raise CustomTaskError("%s: every training label is %r; a classifier needs at least "
                                  "two classes" % (train, spec.labels[0] if spec.labels else None))
        if len(set(spec.labels)) != len(spec.labels):
            raise CustomTaskError("--labels: a label is given twice")
    return spec


def _train_labels(spec):
    from .readers import check_text, raw_rows

    path = spec.splits["train"]
    check_text(path, "the %s file of task %s (UTF-8)" % (spec.raw_format.upper(), spec.name))
    seen = set()  # (type, value): JSON's true and 1 are different labels
    for lineno, row in raw_rows(spec, path, "train"):
        if spec.label_field not in row or row[spec.label_field] in (None, ""):
            raise RawDataError(path, lineno, "missing label field %r" % spec.label_field)
        value = row[spec.label_field]
        if not isinstance(value, (str, int, bool)):
            raise RawDataError(path, lineno, "label %r: expected a string, an integer or a "
                                             "boolean" % (value,))
        seen.add((type(value), value))
    types = {kind for kind, _ in seen}
    if len(types) > 1:
        raise RawDataError(path, 0, "labels of several types (%s); expected one"
                           % ", ".join(sorted(kind.__name__ for kind in types)))
    return tuple(sorted(value for _, value in seen))


def spec_record(spec):
    """The spec as ehft_task.json keeps it."""
    return {"name": spec.name, "format": spec.raw_format, "files": dict(spec.splits),
            "test": spec.test_file or None, "text_fields": list(spec.text_fields),
            "label_field": spec.label_field, "kind": spec.kind, "labels": list(spec.labels),
            "metrics": list(spec.metrics), "id_field": spec.id_field}


def spec_from_record(record):
    return TaskSpec(record["name"], "custom", record["format"], record["files"],
                    tuple(record["text_fields"]), record["label_field"], kind=record["kind"],
                    labels=tuple(record["labels"]), metrics=tuple(record["metrics"]),
                    id_field=record["id_field"], paper_metric=record["metrics"][0],
                    test_file=record.get("test") or "")


def task_spec(meta):
    """The TaskSpec of a prepared data directory's metadata: its own for a custom task, the
    table's otherwise."""
    if SPEC_KEY in meta:
        return spec_from_record(meta[SPEC_KEY])
    return get_task(meta["task"])
