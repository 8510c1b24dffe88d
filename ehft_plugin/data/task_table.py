"""Facts about every GLUE and SuperGLUE task, in one table.

Data preparation, the fairseq task, the metrics and prediction all read this
table; nothing else in the plugin branches on a task's name.

Label maps are fixed (index = class id) so that a label id means the same thing
in every run, on every machine, whatever the order of the training file.
Labels are stored as they appear in the raw files (strings in GLUE TSV, JSON
values in SuperGLUE JSONL) so predictions are written back in the submission
format without a second table.
"""

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Sequence, Tuple

from ..errors import EhftError

CLASSIFICATION = "classification"
REGRESSION = "regression"
RANKING = "ranking"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    benchmark: str  # "glue" or "superglue"
    raw_format: str  # "tsv" or "jsonl"
    # fairseq split name -> raw file name; "train" and "valid" are required.
    # Extra validation subsets are named valid1, valid2, ... as fairseq expects.
    splits: Mapping[str, str]
    text_fields: Tuple[str, ...]  # one encoder segment per field, in order
    label_field: Optional[str]
    kind: str = CLASSIFICATION
    labels: Tuple = ()  # fixed label map, raw values; empty for regression
    # official dev metrics (keys logged by fairseq); the first is the headline
    metrics: Tuple[str, ...] = ("accuracy",)
    id_field: str = "index"  # test-file column used in the submission
    # TSV files without a header row get these column names
    headerless_columns: Tuple[str, ...] = ()
    headerless_splits: Tuple[str, ...] = ()
    choice_fields: Tuple[str, ...] = ()  # ranking: one scored candidate per field
    # builds the encoder segments from a raw row when they are not plain fields
    compose: Optional[Callable[[Mapping], Sequence[str]]] = None
    regression_range: Tuple[float, float] = (float("-inf"), float("inf"))
    notes: str = ""
    display: str = ""  # the name in tables and figures (default: the task's name)
    # the metric published tables use (accuracy, or MCC for CoLA, Pearson for STS-B), so
    # that an average over tasks is comparable with theirs
    paper_metric: str = "accuracy"
    # extra validation subsets reported as their own column: subset -> (column, display)
    subset_columns: Mapping[str, Tuple[str, str]] = field(default_factory=dict)
    test_file: str = ""  # a custom task's test file (built-in tasks: the official test split)

    @property
    def num_classes(self) -> int:
        """Outputs of the classification head (1 for regression and ranking)."""
        return len(self.labels) if self.kind == CLASSIFICATION else 1


def _copa_segments(row: Mapping) -> Sequence[str]:
    # COPA is scored as "<premise> because <choice>" / "<premise> so <choice>":
    # the connective tells the model which direction of causality is asked.
    connective = {"cause": "because", "effect": "so"}[row["question"]]
    return [row["premise"].rstrip().rstrip(".") + " " + connective]


def _copa_question_is_valid(row: Mapping) -> Optional[str]:
    if row.get("question") not in ("cause", "effect"):
        return "field 'question' must be 'cause' or 'effect', got %r" % row.get("question")
    return None


_GLUE_SPLITS = {"train": "train.tsv", "valid": "dev.tsv"}
_SUPERGLUE_SPLITS = {"train": "train.jsonl", "valid": "val.jsonl"}
_BINARY = ("0", "1")

TASKS = {
    spec.name: spec
    for spec in [
        TaskSpec(
            "cola", "glue", "tsv", _GLUE_SPLITS, ("sentence",), "label",
            labels=_BINARY, metrics=("mcc", "accuracy"),
            # the official CoLA train/dev files have no header row
            headerless_columns=("source", "label", "author_label", "sentence"),
            headerless_splits=("train", "valid"),
            notes="1 = acceptable",
            display="CoLA", paper_metric="mcc",
        ),
        TaskSpec(
            "sst2", "glue", "tsv", _GLUE_SPLITS, ("sentence",), "label",
            labels=_BINARY, notes="1 = positive",
            display="SST-2",
        ),
        TaskSpec(
            "mrpc", "glue", "tsv", _GLUE_SPLITS, ("#1 String", "#2 String"),
            "Quality", labels=_BINARY, metrics=("acc_f1", "f1", "accuracy"),
            notes="1 = paraphrase (the positive class of F1); header starts with a BOM",
            display="MRPC",
        ),
        TaskSpec(
            "stsb", "glue", "tsv", _GLUE_SPLITS, ("sentence1", "sentence2"),
            "score", kind=REGRESSION, metrics=("pearson_spearman", "pearson", "spearman"),
            regression_range=(0.0, 5.0), notes="similarity score on a 0-5 scale",
            display="STS-B", paper_metric="pearson",
        ),
        TaskSpec(
            "qqp", "glue", "tsv", _GLUE_SPLITS, ("question1", "question2"),
            "is_duplicate", labels=_BINARY, metrics=("acc_f1", "f1", "accuracy"),
            id_field="id", notes="1 = duplicate (the positive class of F1)",
            display="QQP",
        ),
        TaskSpec(
            "mnli", "glue", "tsv",
            {"train": "train.tsv", "valid": "dev_matched.tsv", "valid1": "dev_mismatched.tsv"},
            ("sentence1", "sentence2"), "gold_label",
            labels=("entailment", "neutral", "contradiction"),
            notes="valid = matched, valid1 = mismatched (--valid-subset valid,valid1)",
            display="MNLI-m", subset_columns={"valid1": ("mnli-mm", "MNLI-mm")},
        ),
        TaskSpec(
            "qnli", "glue", "tsv", _GLUE_SPLITS, ("question", "sentence"),
            "label", labels=("entailment", "not_entailment"),
            display="QNLI",
        ),
        TaskSpec(
            "rte", "glue", "tsv", _GLUE_SPLITS, ("sentence1", "sentence2"),
            "label", labels=("entailment", "not_entailment"),
            display="RTE",
        ),
        TaskSpec(
            "wnli", "glue", "tsv", _GLUE_SPLITS, ("sentence1", "sentence2"),
            "label", labels=_BINARY,
            display="WNLI",
        ),
        TaskSpec(
            # question first: fairseq truncation cuts the end, so a long passage
            # loses its tail instead of the question disappearing
            "boolq", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("question", "passage"), "label", labels=(False, True), id_field="idx",
            display="BoolQ",
        ),
        TaskSpec(
            "cb", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("premise", "hypothesis"), "label",
            labels=("entailment", "contradiction", "neutral"),
            metrics=("acc_macro_f1", "accuracy", "macro_f1"), id_field="idx",
            display="CB",
        ),
        TaskSpec(
            "copa", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("premise", "question"), "label", kind=RANKING, labels=(0, 1),
            choice_fields=("choice1", "choice2"), compose=_copa_segments, id_field="idx",
            notes="each choice scored as '<premise> because|so <choice>', softmax over choices",
            display="COPA",
        ),
        TaskSpec(
            # the target word is a third segment so the encoder sees which word
            # the two contexts are about
            "wic", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("sentence1", "sentence2", "word"), "label", labels=(False, True), id_field="idx",
            display="WiC",
        ),
        TaskSpec(
            "superglue-rte", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("premise", "hypothesis"), "label", labels=("entailment", "not_entailment"),
            id_field="idx",
            display="RTE (SuperGLUE)",
        ),
    ]
}

# the order of tables' columns: GLUE's usual order, then SuperGLUE's; other tasks follow
COLUMN_ORDER = ("mnli", "mnli-mm", "qnli", "qqp", "rte", "sst2", "mrpc", "cola", "stsb", "wnli",
                "boolq", "cb", "copa", "wic", "superglue-rte")

# per-row checks beyond "field present" and "label known"
ROW_CHECKS = {"copa": _copa_question_is_valid}

class UnknownTaskError(EhftError, KeyError):
    def __str__(self):  # KeyError would quote the message
        return self.args[0]


def register_task_spec(spec: TaskSpec) -> TaskSpec:
    """Add a task of your own (see user_dir/); names must not clash with the built-in ones."""
    if spec.name in TASKS and TASKS[spec.name] is not spec:
        raise ValueError("a task named %r is already registered" % spec.name)
    TASKS[spec.name] = spec
    return spec


_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "rte-superglue": "superglue-rte"}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name (case-insensitive, GLUE spellings like SST-2 accepted)."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise UnknownTaskError(
            "unknown task %r; expected one of: %s" % (name, ", ".join(sorted(TASKS)))
        )
    return TASKS[key]


def label_token(value) -> str:
    """The label as one whitespace-free dictionary token (JSON spelling for non-strings)."""
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _column_spec(column: str):
    """(task spec or None, display name) of a report column: a task, a task's extra subset
    (MNLI-mm), or "task/subset" for any other subset."""
    for spec in TASKS.values():
        if column == spec.name:
            return spec, spec.display or spec.name
        for subset_column, display in spec.subset_columns.values():
            if column == subset_column:
                return spec, display
    spec = TASKS.get(column.split("/")[0])
    return spec, column


def column_name(task: str, subset: str) -> str:
    """The report column of a validation subset of `task`."""
    if subset == "valid":
        return task
    spec = TASKS.get(task)
    if spec and subset in spec.subset_columns:
        return spec.subset_columns[subset][0]
    return "%s/%s" % (task, subset)


def display_name(column: str) -> str:
    return _column_spec(column)[1]


def column_key(column: str):
    """Sort key of report columns (COLUMN_ORDER, then by name)."""
    return (COLUMN_ORDER.index(column) if column in COLUMN_ORDER else len(COLUMN_ORDER), column)


def paper_metric(column: str, available, headline=None) -> str:
    """The column's published metric when the run logged it, else accuracy, else the first
    metric by name. A task outside the table (`ehft prepare custom`) is read in `headline`,
    the metric its runs chose their checkpoints on."""
    spec = _column_spec(column)[0]
    metric = spec.paper_metric if spec else (headline or "accuracy")
    if metric in available:
        return metric
    return "accuracy" if "accuracy" in available else sorted(available)[0]
