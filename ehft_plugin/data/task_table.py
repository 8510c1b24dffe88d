"""Facts about every GLUE and SuperGLUE task, in one table.

Data preparation, the fairseq task, the metrics and prediction all read this
table; nothing else in the plugin branches on a task's name.

Label maps are fixed (index = class id) so that a label id means the same thing
in every run, on every machine, whatever the order of the training file.
Labels are stored as they appear in the raw files (strings in GLUE TSV, JSON
values in SuperGLUE JSONL) so predictions are written back in the submission
format without a second table.
"""

from dataclasses import dataclass
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
        ),
        TaskSpec(
            "sst2", "glue", "tsv", _GLUE_SPLITS, ("sentence",), "label",
            labels=_BINARY, notes="1 = positive",
        ),
        TaskSpec(
            "mrpc", "glue", "tsv", _GLUE_SPLITS, ("#1 String", "#2 String"),
            "Quality", labels=_BINARY, metrics=("acc_f1", "f1", "accuracy"),
            notes="1 = paraphrase (the positive class of F1); header starts with a BOM",
        ),
        TaskSpec(
            "stsb", "glue", "tsv", _GLUE_SPLITS, ("sentence1", "sentence2"),
            "score", kind=REGRESSION, metrics=("pearson_spearman", "pearson", "spearman"),
            regression_range=(0.0, 5.0), notes="similarity score on a 0-5 scale",
        ),
        TaskSpec(
            "qqp", "glue", "tsv", _GLUE_SPLITS, ("question1", "question2"),
            "is_duplicate", labels=_BINARY, metrics=("acc_f1", "f1", "accuracy"),
            id_field="id", notes="1 = duplicate (the positive class of F1)",
        ),
        TaskSpec(
            "mnli", "glue", "tsv",
            {"train": "train.tsv", "valid": "dev_matched.tsv", "valid1": "dev_mismatched.tsv"},
            ("sentence1", "sentence2"), "gold_label",
            labels=("entailment", "neutral", "contradiction"),
            notes="valid = matched, valid1 = mismatched (--valid-subset valid,valid1)",
        ),
        TaskSpec(
            "qnli", "glue", "tsv", _GLUE_SPLITS, ("question", "sentence"),
            "label", labels=("entailment", "not_entailment"),
        ),
        TaskSpec(
            "rte", "glue", "tsv", _GLUE_SPLITS, ("sentence1", "sentence2"),
            "label", labels=("entailment", "not_entailment"),
        ),
        TaskSpec(
            "wnli", "glue", "tsv", _GLUE_SPLITS, ("sentence1", "sentence2"),
            "label", labels=_BINARY,
        ),
        TaskSpec(
            # question first: fairseq truncation cuts the end, so a long passage
            # loses its tail instead of the question disappearing
            "boolq", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("question", "passage"), "label", labels=(False, True), id_field="idx",
        ),
        TaskSpec(
            "cb", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("premise", "hypothesis"), "label",
            labels=("entailment", "contradiction", "neutral"),
            metrics=("acc_macro_f1", "accuracy", "macro_f1"), id_field="idx",
        ),
        TaskSpec(
            "copa", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("premise", "question"), "label", kind=RANKING, labels=(0, 1),
            choice_fields=("choice1", "choice2"), compose=_copa_segments, id_field="idx",
            notes="each choice scored as '<premise> because|so <choice>', softmax over choices",
        ),
        TaskSpec(
            # the target word is a third segment so the encoder sees which word
            # the two contexts are about
            "wic", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("sentence1", "sentence2", "word"), "label", labels=(False, True), id_field="idx",
        ),
        TaskSpec(
            "superglue-rte", "superglue", "jsonl", _SUPERGLUE_SPLITS,
            ("premise", "hypothesis"), "label", labels=("entailment", "not_entailment"),
            id_field="idx",
        ),
    ]
}

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
