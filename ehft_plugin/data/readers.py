"""Read official GLUE TSV and SuperGLUE JSONL files (and a custom task's CSV, TSV or JSONL)
into `Example` records.

The readers are strict: a missing or extra column, a malformed JSON line, an
unknown label or an empty split is an error naming the file and line, because
a silently skipped row changes a dev score without anyone noticing.
"""

import csv
import json
import math
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

from ..errors import RawDataError
from .task_table import REGRESSION, ROW_CHECKS, TaskSpec

_BOM = "\ufeff"


@dataclass
class Example:
    segments: List[str]  # encoder segments, in order
    choices: List[str]  # ranking candidates (empty otherwise)
    label: Optional[float]  # class id, regression target or correct choice; None if unlabeled
    example_id: str  # id used in submissions (row index if the file has none)
    line: int  # line in the raw file, for error messages


def _tsv_rows(path: str, spec: TaskSpec, headerless: bool) -> Iterator[Tuple[int, dict]]:
    # GLUE files are plain tab-separated text with quotes as ordinary
    # characters (MRPC, MNLI): csv quoting rules would merge rows.
    with open(path, encoding="utf-8", newline="") as f:
        lines = (line.rstrip("\r\n") for line in f)
        if headerless:
            header, first_line = list(spec.headerless_columns), 1
        else:
            first = next(lines, None)
            if first is None:
                raise RawDataError(path, 0, "file is empty; expected a header row")
            header, first_line = first.lstrip(_BOM).split("\t"), 2
        for lineno, line in enumerate(lines, start=first_line):
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != len(header):
                raise RawDataError(
                    path, lineno,
                    "expected %d tab-separated columns (%s), found %d"
                    % (len(header), ", ".join(header), len(cells)),
                )
            yield lineno, dict(zip(header, cells))


def _csv_rows(path: str) -> Iterator[Tuple[int, dict]]:
    """A CSV file with a header row (a custom task's), with csv quoting; a row with another
    number of cells than the header is an error naming its line."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise RawDataError(path, 0, "file is empty; expected a header row")
        for cells in reader:
            lineno = reader.line_num
            if not cells or not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise RawDataError(path, lineno, "expected %d comma-separated columns (%s), "
                                                 "found %d" % (len(header), ", ".join(header),
                                                               len(cells)))
            yield lineno, dict(zip(header, cells))


def _jsonl_rows(path: str) -> Iterator[Tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RawDataError(path, lineno, "malformed JSON (%s)" % e.msg) from None
            if not isinstance(row, dict):
                raise RawDataError(path, lineno, "expected a JSON object per line")
            yield lineno, row


def _field(row: dict, name: str, path: str, lineno: int):
    if name not in row:
        raise RawDataError(
            path, lineno, "missing field %r (row has: %s)" % (name, ", ".join(map(str, row)))
        )
    return row[name]


def _parse_label(spec: TaskSpec, raw, path: str, lineno: int) -> float:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise RawDataError(path, lineno, "missing label (field %r is empty)" % spec.label_field)
    if spec.kind == REGRESSION:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        low, high = spec.regression_range
        if not (low <= value <= high):
            raise RawDataError(
                path, lineno, "label %r is not a number in [%g, %g]" % (raw, low, high)
            )
        return value
    if raw not in spec.labels or type(raw) is not type(spec.labels[0]):
        raise RawDataError(
            path, lineno,
            "unknown label %r; expected one of: %s"
            % (raw, ", ".join(json.dumps(x) if not isinstance(x, str) else x for x in spec.labels)),
        )
    return spec.labels.index(raw)


def _segments(spec: TaskSpec, row: dict, path: str, lineno: int) -> List[str]:
    for name in spec.text_fields:
        _field(row, name, path, lineno)
    problem = ROW_CHECKS.get(spec.name, lambda r: None)(row)
    if problem:
        raise RawDataError(path, lineno, problem)
    values = spec.compose(row) if spec.compose else [row[n] for n in spec.text_fields]
    for name, value in zip(spec.text_fields, values):
        if not isinstance(value, str):
            raise RawDataError(path, lineno, "field %r must be a string" % name)
    return list(values)


def check_text(path: str, expected: str, error=RawDataError, flag=""):
    """A file that is not UTF-8 text (binary, another encoding) is refused with the line of
    its first bad byte and what was expected, before anything reads it as text."""
    with open(path, "rb") as f:
        data = f.read()
    line = None
    if b"\x00" in data:
        line, why = data.count(b"\n", 0, data.index(b"\x00")) + 1, "holds NUL bytes: not text"
    else:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            why = "not UTF-8 (byte 0x%02x at offset %d)" % (data[e.start], e.start)
    if line is not None:
        message = "%s; expected %s" % (why, expected)
        if error is RawDataError:
            raise RawDataError(path, line, message)
        raise error("%s%s:%d: %s" % (flag + " " if flag else "", path, line, message))


def _described(spec: TaskSpec) -> str:
    if spec.benchmark == "custom":
        return "the %s file of task %s" % (spec.raw_format.upper(), spec.name)
    return "the official %s %s file" % (spec.benchmark.upper(), spec.name)


def raw_rows(spec: TaskSpec, path: str, split: str) -> Iterator[Tuple[int, dict]]:
    """(line, row) of a raw file in the task's format: GLUE-style TSV (quotes are ordinary
    characters), CSV (a custom task's, with csv quoting) or JSONL."""
    if spec.raw_format == "tsv":
        return _tsv_rows(path, spec, headerless=split in spec.headerless_splits)
    if spec.raw_format == "csv":
        return _csv_rows(path)
    return _jsonl_rows(path)


def read_examples(spec: TaskSpec, path: str, split: str, labeled: bool = True) -> List[Example]:
    """All examples of one raw file; `labeled=False` for test files (no label column)."""
    if not os.path.isfile(path):
        raise RawDataError(path, 0, "file not found (expected %s)" % _described(spec))
    check_text(path, "%s (UTF-8 %s)" % (_described(spec), spec.raw_format.upper()))
    examples = []
    for lineno, row in raw_rows(spec, path, split):
        segments = _segments(spec, row, path, lineno)
        choices = [str(_field(row, c, path, lineno)) for c in spec.choice_fields]
        label = None
        if labeled:
            label = _parse_label(spec, _field(row, spec.label_field, path, lineno), path, lineno)
        example_id = str(row.get(spec.id_field, len(examples)))
        examples.append(Example(segments, choices, label, example_id, lineno))
    if not examples:
        raise RawDataError(path, 0, "no examples found; the %s split must not be empty" % split)
    return examples
