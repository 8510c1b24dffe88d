"""Raw GLUE/SuperGLUE readers: the official formats, and clear errors for bad files."""

import json

import pytest
from conftest import shared

from ehft_plugin.data.readers import read_examples
from ehft_plugin.data.task_table import TASKS, get_task
from ehft_plugin.errors import RawDataError

# (task, directory under ../shared/data, split, data rows in the official file)
REAL_FILES = [
    ("cola", "glue/CoLA", "train", 8551),
    ("cola", "glue/CoLA", "valid", 1043),
    ("sst2", "glue/SST-2", "valid", 872),
    ("mrpc", "glue/MRPC", "train", 3668),
    ("mrpc", "glue/MRPC", "valid", 408),
    ("stsb", "glue/STS-B", "train", 5749),
    ("stsb", "glue/STS-B", "valid", 1500),
    ("rte", "glue/RTE", "train", 2490),
    ("rte", "glue/RTE", "valid", 277),
    ("cb", "superglue/CB", "train", 250),
    ("cb", "superglue/CB", "valid", 56),
    ("copa", "superglue/COPA", "train", 400),
    ("copa", "superglue/COPA", "valid", 100),
    ("superglue-rte", "superglue/RTE", "valid", 277),
]


@pytest.mark.parametrize("task,directory,split,rows", REAL_FILES)
def test_reads_every_row_of_the_real_files(task, directory, split, rows):
    spec = get_task(task)
    examples = read_examples(spec, shared(directory, spec.splits[split]), split)
    assert len(examples) == rows
    first = examples[0]
    assert all(isinstance(s, str) and s for s in first.segments)
    assert first.label is not None


def test_cola_headerless_columns_and_labels():
    spec = get_task("CoLA")
    ex = read_examples(spec, shared("glue/CoLA/dev.tsv"), "valid")[0]
    assert ex.segments == ["The sailors rode the breeze clear of the rocks."]
    assert ex.label == 1


def test_mrpc_header_with_bom_and_quotes_kept_verbatim():
    ex = read_examples(get_task("mrpc"), shared("glue/MRPC/dev.tsv"), "valid")[0]
    assert ex.label == 1
    # GLUE TSV has no quoting: a leading quote is part of the sentence
    assert ex.segments[1].startswith('"The foodservice pie business')


def test_stsb_targets_are_floats_on_the_0_5_scale():
    examples = read_examples(get_task("sts-b"), shared("glue/STS-B/dev.tsv"), "valid")
    assert examples[0].label == 5.0
    assert all(0.0 <= e.label <= 5.0 for e in examples)


def test_copa_builds_premise_with_connective_and_two_choices():
    examples = read_examples(get_task("copa"), shared("superglue/COPA/val.jsonl"), "valid")
    ex = examples[0]  # "effect" question
    assert ex.segments == ["The man turned on the faucet so"]
    assert ex.choices == ["The toilet filled with water.", "Water flowed from the spout."]
    assert ex.label == 1


def test_test_files_are_read_without_labels_and_keep_their_ids():
    examples = read_examples(get_task("rte"), shared("glue/RTE/test.tsv"), "test", labeled=False)
    assert len(examples) == 3000
    assert examples[5].example_id == "5" and examples[5].label is None
    cb = read_examples(get_task("cb"), shared("superglue/CB/test.jsonl"), "test", labeled=False)
    assert cb[0].example_id == "0"


# ---- official formats of the tasks whose files are not in ../shared/data ----

OFFICIAL_SAMPLES = {
    "qqp": ("dev.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                       "7\t15\t16\tHow do I read?\tHow can I read?\t1\n", ["How do I read?", "How can I read?"], 1),
    "mnli": ("dev_mismatched.tsv",
             "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
             "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\t"
             "label4\tlabel5\tgold_label\n"
             "0\t75290\t75290c\tletters\t( ( x ) )\t( y )\t(ROOT x)\t(ROOT y)\tYour gift is "
             "appreciated.\tHundreds of students will benefit.\tneutral\tneutral\tneutral\t"
             "neutral\tneutral\tneutral\n",
             ["Your gift is appreciated.", "Hundreds of students will benefit."], 1),
    "qnli": ("dev.tsv", "index\tquestion\tsentence\tlabel\n0\tWhat came into force?\tThe law came "
                        "into force.\tentailment\n",
             ["What came into force?", "The law came into force."], 0),
    "wnli": ("dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\tThe drain is clogged.\tThe hair "
                        "is clogged.\t0\n", ["The drain is clogged.", "The hair is clogged."], 0),
    "boolq": ("val.jsonl", json.dumps({"question": "is the sky blue", "passage": "The sky is blue.",
                                       "idx": 3, "label": True}) + "\n",
              ["is the sky blue", "The sky is blue."], 1),
    "wic": ("val.jsonl", json.dumps({"word": "place", "sentence1": "Do you want to come over to "
                                     "my place later?", "sentence2": "A political system with no "
                                     "place for the less prominent groups.", "idx": 0,
                                     "label": False, "start1": 31, "start2": 27, "end1": 36,
                                     "end2": 32, "version": 1.1}) + "\n",
            ["Do you want to come over to my place later?",
             "A political system with no place for the less prominent groups.", "place"], 0),
}


@pytest.mark.parametrize("task", sorted(OFFICIAL_SAMPLES))
def test_official_formats_of_other_tasks(task, tmp_path):
    name, text, segments, label = OFFICIAL_SAMPLES[task]
    (tmp_path / name).write_text(text)
    split = "valid1" if name == "dev_mismatched.tsv" else "valid"
    assert get_task(task).splits[split] == name
    [ex] = read_examples(get_task(task), tmp_path / name, split)
    assert ex.segments == segments and ex.label == label


def test_every_task_has_a_consistent_table_entry():
    for spec in TASKS.values():
        assert {"train", "valid"} <= set(spec.splits)
        assert spec.metrics, spec.name
        if spec.kind == "regression":
            assert not spec.labels
        else:
            assert len(set(spec.labels)) == len(spec.labels) >= 2


# ---- bad input: each error names the file, the line and what was expected ----

def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


@pytest.mark.parametrize("task,name,text,expected", [
    ("rte", "dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\n",
     r"dev.tsv:3: expected 4 tab-separated columns \(index, sentence1, sentence2, label\), found 3"),
    ("rte", "dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\textra\n",
     r"dev.tsv:2: expected 4 tab-separated columns .* found 5"),
    ("rte", "dev.tsv", RTE_HEADER + "0\ta\tb\tcontradiction\n",
     r"dev.tsv:2: unknown label 'contradiction'; expected one of: entailment, not_entailment"),
    ("rte", "dev.tsv", RTE_HEADER, r"dev.tsv: no examples found; the valid split must not be empty"),
    ("rte", "dev.tsv", "", r"dev.tsv: file is empty; expected a header row"),
    ("stsb", "dev.tsv", "index\tsentence1\tsentence2\tscore\n0\ta\tb\t7.5\n",
     r"dev.tsv:2: label '7.5' is not a number in \[0, 5\]"),
    ("cb", "val.jsonl", '{"premise": "a", "hypothesis": "b", "label": "neutral", "idx": 0}\n{"premise": ',
     r"val.jsonl:2: malformed JSON"),
    ("cb", "val.jsonl", '{"premise": "a", "label": "neutral", "idx": 0}\n',
     r"val.jsonl:1: missing field 'hypothesis'"),
    ("boolq", "val.jsonl", '{"question": "q", "passage": "p", "label": 1, "idx": 0}\n',
     r"val.jsonl:1: unknown label 1; expected one of: false, true"),
    ("copa", "val.jsonl", '{"premise": "p", "choice1": "a", "choice2": "b", "question": "why", '
                          '"label": 0, "idx": 0}\n', r"val.jsonl:1: field 'question' must be"),
])
def test_bad_rows_are_errors_naming_file_and_line(tmp_path, task, name, text, expected):
    path = _write(tmp_path, name, text)
    with pytest.raises(RawDataError, match=expected):
        read_examples(get_task(task), path, "valid")


def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(RawDataError, match=r"nope.tsv: file not found"):
        read_examples(get_task("rte"), tmp_path / "nope.tsv", "valid")


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(KeyError, match=r"unknown task 'mnli-x'; expected one of: boolq, cb, cola"):
        get_task("mnli-x")
