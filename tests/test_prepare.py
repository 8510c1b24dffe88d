"""`ehft prepare`: layout and metadata, atomic output, and clear CLI errors."""

import json
import os
import re

import pytest
from conftest import ehft, gpt2_flags, gpt2_spec, shared, subset

from ehft_plugin.data.binarize import load_metadata, prepare
from ehft_plugin.data.task_table import get_task
from ehft_plugin.errors import EhftError, RawDataError


def test_layout_metadata_and_label_dictionary(tmp_path):
    raw = subset(shared("superglue/CB"), tmp_path / "raw", rows=30)
    meta = prepare(get_task("cb"), str(raw), str(tmp_path / "bin"), gpt2_spec())
    assert meta == load_metadata(str(tmp_path / "bin"))
    assert meta["task"] == "cb" and meta["kind"] == "classification"
    assert meta["labels"] == ["entailment", "contradiction", "neutral"]  # fixed order
    assert meta["segments"] == 2 and meta["choices"] == 0
    assert {s: i["examples"] for s, i in meta["splits"].items()} == {"train": 30, "valid": 30}
    # the label dictionary lists the labels in the fixed order, with train counts
    lines = (tmp_path / "bin/label/dict.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == meta["labels"]
    assert sum(int(line.split()[1]) for line in lines) == 30
    # tokeniser files travel with the data, recorded relative to it
    assert meta["tokenizer"]["gpt2_encoder_json"] == "encoder.json"
    assert (tmp_path / "bin/tokenizer/encoder.json").is_file()
    assert oct(os.stat(tmp_path / "bin").st_mode & 0o777) != oct(0o700)


def test_regression_targets_are_written_as_floats(tmp_path):
    raw = subset(shared("glue/STS-B"), tmp_path / "raw", rows=5)
    prepare(get_task("stsb"), str(raw), str(tmp_path / "bin"), gpt2_spec())
    targets = (tmp_path / "bin/label/valid.label").read_text().split()
    assert [float(t) for t in targets] == [5.0, 4.75, 5.0, 2.4, 2.75]


def test_ranking_task_writes_one_stream_per_choice(tmp_path):
    raw = subset(shared("superglue/COPA"), tmp_path / "raw", rows=10)
    meta = prepare(get_task("copa"), str(raw), str(tmp_path / "bin"), gpt2_spec())
    assert meta["kind"] == "ranking" and meta["segments"] == 1 and meta["choices"] == 2
    assert {p.name for p in (tmp_path / "bin").iterdir()} >= {"input0", "input1", "input2"}


def test_max_length_truncates_the_longer_segment_first_keeping_separators(tmp_path):
    import torch

    from ehft_plugin.data.binarize import truncate_longest_first

    eos = 2
    a, b = torch.tensor([5, 6, 7, 8, 9, 10, eos]), torch.tensor([11, 12, eos])
    # roberta: <s> A </s> </s> B </s>, 1 + 7 + 1 + 3 = 12 tokens; fit 9
    short_a, same_b = truncate_longest_first([a, b], 9, extra_per_segment=1)
    assert short_a.tolist() == [5, 6, 7, eos] and same_b.tolist() == [11, 12, eos]
    # bert joins without the extra separator: <s> A </s> B </s>, 11 tokens; fit 6 (at a tie
    # the first segment gives way)
    x, y = truncate_longest_first([a, b], 6, extra_per_segment=0)
    assert x.tolist() == [5, eos] and y.tolist() == [11, 12, eos]
    assert truncate_longest_first([a, b], 64, 1) == [a, b]  # short inputs are kept as they are

    raw = subset(shared("glue/RTE"), tmp_path / "raw", rows=20)
    meta = prepare(get_task("rte"), str(raw), str(tmp_path / "bin"), gpt2_spec(), max_length=32)
    assert meta["max_length"] == 32
    from fairseq.data import data_utils

    from ehft_plugin.data.tokenisers import load_dictionary

    d = load_dictionary(str(tmp_path / "bin/input0/dict.txt"))
    first, second = (data_utils.load_indexed_dataset(str(tmp_path / "bin" / s / "train"), d)
                     for s in ("input0", "input1"))
    lengths = [1 + len(first[i]) + 1 + len(second[i]) for i in range(len(first))]
    assert max(lengths) == 32 and all(first[i][-1] == d.eos() for i in range(len(first)))
    with pytest.raises(EhftError, match="--max-length 32: expected an integer >= 4, for a task "
                                        "without answer choices"):
        prepare(get_task("copa"), str(raw), str(tmp_path / "copa"), gpt2_spec(), max_length=32)


def _no_leftovers(parent):
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


def test_failure_leaves_no_output_and_no_temporary_directory(tmp_path):
    raw = subset(shared("glue/RTE"), tmp_path / "raw", rows=10)
    with open(raw / "dev.tsv", "a") as f:
        f.write("99\ta\tb\tmaybe\n")
    out = tmp_path / "out" / "rte"
    with pytest.raises(RawDataError, match=r"dev.tsv:12: unknown label 'maybe'"):
        prepare(get_task("rte"), str(raw), str(out), gpt2_spec())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # nothing was created


def test_interrupted_write_leaves_no_output(tmp_path, monkeypatch):
    """A failure after files were written (here: the tokeniser copy) removes them all."""
    from ehft_plugin.data import tokenisers

    raw = subset(shared("glue/RTE"), tmp_path / "raw", rows=10)

    def broken_copy(self, directory):
        raise OSError("disk full")

    monkeypatch.setattr(tokenisers.TokeniserSpec, "copy_into", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        prepare(get_task("rte"), str(raw), str(tmp_path / "rte"), gpt2_spec())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_existing_output_is_kept_unless_forced(tmp_path):
    raw = subset(shared("glue/RTE"), tmp_path / "raw", rows=10)
    out = tmp_path / "rte"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(EhftError, match=r"--out-dir .*rte already exists; pass --force"):
        prepare(get_task("rte"), str(raw), str(out), gpt2_spec())
    assert (out / "keep.txt").read_text() == "mine"
    prepare(get_task("rte"), str(raw), str(out), gpt2_spec(), force=True)
    assert not (out / "keep.txt").exists() and (out / "ehft_task.json").is_file()
    assert _no_leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["nosuchtask", "--raw-dir", "x", "--out-dir", "y"],
     "ehft prepare: error: unknown task 'nosuchtask'; expected one of: boolq, cb, cola, copa"),
    (["rte", "--raw-dir", "/nonexistent", "--out-dir", "y"],
     "ehft prepare: error: /nonexistent/train.tsv: file not found"),
])
def test_cli_errors_exit_non_zero_with_the_message(tmp_path, args, message):
    result = ehft("prepare", *args, *gpt2_flags(), check=False, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "y").exists()


@pytest.mark.slow
def test_a_raw_dir_that_is_a_file_is_named_as_such(tmp_path):
    raw = shared("glue", "RTE", "train.tsv")
    result = ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "y", *gpt2_flags(),
                  check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "ehft prepare: error: --raw-dir %s is a file; expected the directory that holds the "
        "task's official raw files (%s's, not one of them)" % (raw, raw.parent))
    assert not (tmp_path / "y").exists()


def test_metadata_of_another_format_version_is_refused(tmp_path):
    (tmp_path / "ehft_task.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(EhftError, match=r"format_version 99, expected 1; re-run `ehft prepare`"):
        load_metadata(str(tmp_path))
    with pytest.raises(EhftError, match=r"is .* a directory written by `ehft prepare`"):
        load_metadata(str(tmp_path / "missing"))


@pytest.mark.slow
@pytest.mark.parametrize("garbage,message", [
    (b"\xff\xfe latin-1 or UTF-16, not UTF-8\n", r"train.tsv:26: not UTF-8 \(byte 0xff at "
                                                 r"offset \d+\); expected the official GLUE rte"),
    (b"\x00\x01\x02binary\n", r"train.tsv:26: holds NUL bytes: not text; expected the official"),
])
def test_a_raw_file_that_is_not_utf8_text_is_named_with_its_line(tmp_path, garbage, message):
    raw = subset(shared("glue", "RTE"), tmp_path / "raw", rows=24)
    with open(raw / "train.tsv", "ab") as f:
        f.write(garbage)
    result = ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", tmp_path / "bin",
                  *gpt2_flags(), check=False)
    assert result.returncode == 2
    assert re.search(message, result.stderr.strip().splitlines()[-1])
    assert "Traceback" not in result.stderr and not (tmp_path / "bin").exists()
