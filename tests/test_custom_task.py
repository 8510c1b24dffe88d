"""`ehft prepare custom`: a task of one's own from CSV, TSV or JSONL files, with no code; then
`ehft train`, `ehft report` and `ehft predict` on it. Built from real files that are not a
GLUE task here: SST-2's sentences re-labelled into a CSV with other column names, and MRPC's
raw `msr_paraphrase_train.txt` (a TSV pair task)."""

import csv
import json

import pytest
from conftest import ehft, gpt2_flags, shared, stock_checkpoint

pytestmark = pytest.mark.slow  # these tests (or their fixtures) start processes

FAIRSEQ = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0"]
NAMES = {"0": "negative", "1": "positive"}


def sst2_rows(split, start, count):
    lines = (shared("glue", "SST-2") / ("%s.tsv" % split)).read_text().splitlines()[1:]
    return [line.split("\t") for line in lines[start:start + count]]


def write_csv(path, rows, header=("id", "review", "sentiment")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    """SST-2 as a user's CSV: id, review, sentiment (negative/positive); the test file has no
    labels. Its commas make csv quote fields."""
    tmp = tmp_path_factory.mktemp("custom")
    raw = tmp / "raw"
    raw.mkdir()
    train = [("t%d" % i, s.strip(), NAMES[l]) for i, (s, l) in enumerate(sst2_rows("train", 0, 64))]
    dev = [("d%d" % i, s.strip(), NAMES[l]) for i, (s, l) in enumerate(sst2_rows("dev", 0, 32))]
    test = [("x%d" % i, s.strip()) for i, (s, _) in enumerate(sst2_rows("dev", 32, 20))]
    files = {"train": write_csv(raw / "train.csv", train), "dev": write_csv(raw / "dev.csv", dev),
             "test": write_csv(raw / "test.csv", test, header=("id", "review"))}
    assert any('"' in line for line in (raw / "train.csv").read_text().splitlines())
    return {"tmp": tmp, "files": files, "test_rows": test, "dev_rows": dev}


def prepare(files, out, *extra, check=True):
    return ehft("prepare", "custom", "--name", "reviews", "--train", files["train"],
                "--dev", files["dev"], "--test", files["test"], "--text-fields", "review",
                "--label-field", "sentiment", "--id-field", "id", "--out-dir", out,
                *gpt2_flags(), *extra, check=check)


@pytest.fixture(scope="module")
def prepared(reviews):
    out = reviews["tmp"] / "bin"
    prepare(reviews["files"], out, "--metric", "mcc")
    return out


def test_the_task_is_written_into_the_data_directory(prepared, reviews):
    meta = json.loads((prepared / "ehft_task.json").read_text())
    assert meta["task"] == "reviews" and meta["kind"] == "classification"
    assert meta["labels"] == ["negative", "positive"]  # train's labels, sorted
    assert meta["metrics"] == ["mcc", "accuracy"]  # the headline first
    assert meta["splits"]["train"]["examples"] == 64 and meta["splits"]["valid"]["examples"] == 32
    spec = meta["custom_task"]
    assert spec["text_fields"] == ["review"] and spec["test"] == str(reviews["files"]["test"])
    # the label dictionary holds the classes in that order, with train's counts
    counts = [line.split() for line in (prepared / "label" / "dict.txt").read_text().splitlines()]
    positives = sum(1 for *_, label in csv.reader(open(reviews["files"]["train"]))
                    if label == "positive")
    assert counts == [["negative", str(64 - positives)], ["positive", str(positives)]]


def test_train_report_and_predict_work_on_it_with_no_code(prepared, reviews):
    tmp = reviews["tmp"]
    checkpoint = stock_checkpoint(prepared, tmp / "pretrained")
    ehft("train", "--method", "ehft-bitfit", "--data", prepared, "--checkpoint", checkpoint,
         "--save-dir", tmp / "runs", "--total-updates", "2", "--stage1-updates", "1",
         "--batch-size", "8", "--quiet", *FAIRSEQ)
    run = tmp / "runs" / "reviews" / "ehft-bitfit" / "seed1"
    assert json.loads((run / "stage2" / "done.json").read_text())["metric"] == "mcc"
    ehft("report", tmp / "runs", "--out", tmp / "report.md", "--no-plots")
    summary = json.loads((tmp / "report.json").read_text())
    assert summary["reviews"]["ehft-bitfit"]["metric"] == "mcc"  # its own headline
    # predictions for the test file, in its format: id and class name per row
    ehft("predict", "--checkpoint", run / "stage2" / "checkpoint_best.pt",
         "--input", reviews["files"]["test"], "--out", tmp / "pred.csv")
    rows = list(csv.reader(open(tmp / "pred.csv")))
    assert rows[0] == ["id", "prediction"]
    assert [r[0] for r in rows[1:]] == [r[0] for r in reviews["test_rows"]]
    assert {r[1] for r in rows[1:]} <= {"negative", "positive"}
    # and the dev file, scored as in validation
    scored = ehft("predict", "--checkpoint", run / "stage2" / "checkpoint_best.pt", "--input",
                  reviews["files"]["dev"], "--out", tmp / "dev-pred.csv", "--labeled")
    metrics = json.loads(scored.stdout.strip().splitlines()[-1])["metrics"]
    assert set(metrics) == {"mcc", "accuracy"}
    # and out to transformers, with the task's class names
    ehft("export-hf", "--checkpoint", run / "stage2" / "checkpoint_best.pt", "--out",
         tmp / "hf")
    config = json.loads((tmp / "hf" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_a_raw_msr_paraphrase_file_is_a_tsv_pair_task(tmp_path):
    source = shared("glue", "MRPC", "msr_paraphrase_train.txt")
    lines = source.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].split("\t")[0] == "Quality"
    (tmp_path / "train.txt").write_text("\n".join(lines[:41]) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join([lines[0]] + lines[41:61]) + "\n")
    ehft("prepare", "custom", "--name", "paraphrase", "--format", "tsv",
         "--train", tmp_path / "train.txt", "--dev", tmp_path / "dev.txt",
         "--text-fields", "#1 String", "#2 String", "--label-field", "Quality",
         "--metric", "f1", "--out-dir", tmp_path / "bin", *gpt2_flags())
    meta = json.loads((tmp_path / "bin" / "ehft_task.json").read_text())
    assert meta["segments"] == 2 and meta["labels"] == ["0", "1"]
    assert meta["metrics"] == ["f1", "accuracy"]
    assert (tmp_path / "bin" / "input1" / "valid.bin").is_file()


def test_a_regression_task_from_jsonl(tmp_path):
    lines = (shared("glue", "STS-B") / "train.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:41]]
    records = [{"a": r["sentence1"], "b": r["sentence2"], "score": float(r["score"])}
               for r in rows]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:30]))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[30:]))
    ehft("prepare", "custom", "--name", "similarity", "--train", tmp_path / "train.jsonl",
         "--dev", tmp_path / "dev.jsonl", "--text-fields", "a", "b", "--label-field", "score",
         "--regression", "--metric", "spearman", "--out-dir", tmp_path / "bin", *gpt2_flags())
    meta = json.loads((tmp_path / "bin" / "ehft_task.json").read_text())
    assert meta["kind"] == "regression" and meta["metrics"] == ["spearman", "pearson"]
    targets = (tmp_path / "bin" / "label" / "valid.label").read_text().split()
    assert [float(t) for t in targets] == [r["score"] for r in records[30:]]


def _bad(reviews, tmp_path, name, rows, header=("id", "review", "sentiment")):
    files = dict(reviews["files"])
    files[name] = write_csv(tmp_path / ("%s.csv" % name), rows, header)
    return files


@pytest.mark.parametrize("case", ["label missing", "unseen label", "no such field",
                                  "empty test", "short row"])
def test_bad_files_are_refused_naming_file_and_line_and_nothing_is_written(reviews, tmp_path,
                                                                           case):
    dev = list(reviews["dev_rows"])
    if case == "label missing":
        dev[4] = (dev[4][0], dev[4][1], "")
        files, expected = _bad(reviews, tmp_path, "dev", dev), \
            "dev.csv:6: missing label (field 'sentiment' is empty)"
    elif case == "unseen label":
        dev[2] = (dev[2][0], dev[2][1], "neutral")
        files, expected = _bad(reviews, tmp_path, "dev", dev), \
            "dev.csv:4: unknown label 'neutral'; expected one of: negative, positive"
    elif case == "no such field":
        files, expected = _bad(reviews, tmp_path, "dev", dev, ("id", "text", "sentiment")), \
            "dev.csv:2: missing field 'review'"
    elif case == "empty test":
        files = dict(reviews["files"], test=write_csv(tmp_path / "test.csv", [], ("id", "review")))
        expected = "test.csv: no examples found; the test split must not be empty"
    else:
        dev[7] = (dev[7][0], dev[7][1])
        files, expected = _bad(reviews, tmp_path, "dev", dev), \
            "dev.csv:9: expected 3 comma-separated columns (id, review, sentiment), found 2"
    result = prepare(files, tmp_path / "out", check=False)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, expected", [
    (["--metric", "pearson"], "--metric pearson: expected one of accuracy, f1, macro_f1, mcc, "
                              "acc_f1 for classification"),
    (["--name", "rte"], "--name rte: the name of a built-in task; choose another"),
])
def test_bad_flags_are_refused(reviews, tmp_path, flags, expected):
    result = prepare(reviews["files"], tmp_path / "out", *flags, check=False)
    assert result.returncode == 2 and expected in result.stderr
    assert not (tmp_path / "out").exists()


def test_custom_flags_on_a_built_in_task_are_refused(tmp_path):
    result = ehft("prepare", "rte", "--raw-dir", shared("glue", "RTE"), "--label-field", "x",
                  "--out-dir", tmp_path / "out", *gpt2_flags(), check=False)
    assert result.returncode == 2
    assert "--label-field: only for `ehft prepare custom`" in result.stderr
