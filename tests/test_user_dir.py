"""The user_dir/ example: a user's own task with its own TSV columns and label set."""

import json

from conftest import REPO, ehft, fairseq_train, gpt2_flags, shared
import pytest

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes


def _reviews(path, lines):
    names = {"0": "negative", "1": "positive"}
    rows = ["id\treview\tsentiment"]
    rows += ["r%d\t%s\t%s" % (i, text.strip(), names[label])
             for i, (text, label) in enumerate(line.split("\t") for line in lines)]
    path.write_text("\n".join(rows) + "\n")


def test_own_task_prepares_trains_and_predicts(tmp_path):
    sst = shared("glue/SST-2/train.tsv").read_text().splitlines()[1:]
    raw = tmp_path / "reviews"
    raw.mkdir()
    _reviews(raw / "train.tsv", sst[:64])
    _reviews(raw / "dev.tsv", sst[64:93])
    user_dir = REPO / "user_dir"

    ehft("prepare", "movie-sentiment", "--user-dir", user_dir, "--raw-dir", raw,
         "--out-dir", tmp_path / "bin", *gpt2_flags())
    meta = json.loads((tmp_path / "bin" / "ehft_task.json").read_text())
    assert meta["labels"] == ["negative", "positive"] and meta["metrics"] == ["accuracy", "f1"]

    _, records = fairseq_train(tmp_path / "bin", tmp_path / "ck", user_dir=user_dir, updates=3)
    assert {"valid_accuracy", "valid_f1"} <= set(records[-1])

    out = tmp_path / "predictions.tsv"
    result = ehft("predict", "--user-dir", user_dir, "--checkpoint",
                  tmp_path / "ck" / "checkpoint_last.pt", "--input", raw / "dev.tsv",
                  "--out", out, "--labeled")
    scores = json.loads(result.stdout.splitlines()[-1])["metrics"]
    assert scores["accuracy"] == float(records[-1]["valid_accuracy"])
    lines = out.read_text().splitlines()
    assert lines[1].split("\t")[0] == "r0"
    assert {line.split("\t")[1] for line in lines[1:]} <= {"negative", "positive"}


def test_without_the_user_dir_the_task_is_unknown(tmp_path):
    result = ehft("prepare", "movie-sentiment", "--raw-dir", tmp_path, "--out-dir",
                  tmp_path / "bin", *gpt2_flags(), check=False)
    assert result.returncode == 2
    assert "unknown task 'movie-sentiment'" in result.stderr
