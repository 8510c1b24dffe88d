"""`ehft submit`: leaderboard bundles from runs, checked file by file (name, header, rows,
label vocabulary) against the official test files here."""

import json
import shutil
import zipfile

import pytest
from conftest import ehft, gpt2_flags, prepare_rte, shared, stock_checkpoint, subset

from ehft_plugin.data.readers import read_examples
from ehft_plugin.data.task_table import get_task

FAIRSEQ = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0"]


def prepare(task, source, tmp, rows=40):
    raw = subset(source, tmp / task / "raw", rows=rows)
    ehft("prepare", task, "--raw-dir", raw, "--out-dir", tmp / task / "bin", *gpt2_flags())
    return tmp / task / "bin"


def train(data, checkpoint, save_dir, seeds=("1",)):
    ehft("train", "--method", "ft", "--data", data, "--checkpoint", checkpoint, "--save-dir",
         save_dir, "--total-updates", "2", "--batch-size", "8", "--seeds", *seeds, "--quiet",
         *FAIRSEQ)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """ft on RTE (two seeds), STS-B and CB (SuperGLUE) from one tiny pretrained checkpoint."""
    tmp = tmp_path_factory.mktemp("submit")
    rte = prepare_rte(tmp / "rte", rows=40)
    checkpoint = stock_checkpoint(rte, tmp / "pretrained")
    train(rte, checkpoint, tmp / "runs", seeds=("1", "2"))
    train(prepare("stsb", shared("glue", "STS-B"), tmp), checkpoint, tmp / "runs")
    train(prepare("cb", shared("superglue", "CB"), tmp), checkpoint, tmp / "runs")
    return {"tmp": tmp, "runs": tmp / "runs", "checkpoint": checkpoint}


def ids_of(task, path):
    return [ex.example_id for ex in read_examples(get_task(task), str(path), "test",
                                                  labeled=False)]


@pytest.mark.slow
def test_a_missing_task_is_refused_unless_filled_with_the_train_majority(runs, tmp_path):
    args = ["submit", runs["runs"], "--benchmark", "glue", "--raw-root", shared(), "--only",
            "RTE", "MRPC", "STS-B", "--out", tmp_path / "glue.zip"]
    refused = ehft(*args, check=False)
    assert refused.returncode == 2
    assert "no runs for MRPC; pass --fill-missing majority" in refused.stderr
    assert not (tmp_path / "glue.zip").exists()
    result = ehft(*args, "--fill-missing", "majority")
    assert "filled with the train majority class (no run): MRPC.tsv" in result.stdout
    bundle = zipfile.ZipFile(tmp_path / "glue.zip")
    assert sorted(bundle.namelist()) == ["MRPC.tsv", "README.txt", "RTE.tsv", "STS-B.tsv"]
    files = {name: bundle.read(name).decode().splitlines() for name in bundle.namelist()}
    for name, task, rows in (("RTE.tsv", "rte", 3000), ("MRPC.tsv", "mrpc", 1725),
                             ("STS-B.tsv", "stsb", 1379)):
        lines = files[name]
        assert lines[0] == "index\tprediction" and len(lines) == rows + 1
        ids = [line.split("\t")[0] for line in lines[1:]]
        test = shared("glue", {"rte": "RTE", "mrpc": "MRPC", "stsb": "STS-B"}[task], "test.tsv")
        assert ids == ids_of(task, test)
    assert {line.split("\t")[1] for line in files["RTE.tsv"][1:]} <= {"entailment",
                                                                     "not_entailment"}
    scores = [line.split("\t")[1] for line in files["STS-B.tsv"][1:]]
    assert all(0.0 <= float(s) <= 5.0 and len(s.split(".")[1]) == 3 for s in scores)
    # MRPC: every row the class most frequent in MRPC's train file
    train = read_examples(get_task("mrpc"), str(shared("glue", "MRPC", "train.tsv")), "train")
    majority = max(("0", "1"), key=lambda c: sum(1 for ex in train if str(int(ex.label)) == c))
    assert {line.split("\t")[1] for line in files["MRPC.tsv"][1:]} == {majority}
    readme = "\n".join(files["README.txt"])
    assert "MRPC.tsv: filled: the train majority class of mrpc (no run)" in readme
    assert "RTE.tsv: ft seed " in readme and "checkpoint_best.pt" in readme
    assert "Not in this bundle (left out with --only): CoLA, SST-2, QQP, MNLI-m" in readme


@pytest.mark.slow
def test_the_seed_with_the_best_dev_score_predicts(runs, tmp_path):
    from ehft_plugin.interop.submit import choose_runs

    chosen = choose_runs([str(runs["runs"])])["rte"]
    scores = {}
    for seed in (1, 2):
        done = json.loads((runs["runs"] / "rte" / "ft" / ("seed%d" % seed) / "finetune" /
                           "done.json").read_text())
        scores[seed] = max(float(r["valid_accuracy"]) for r in done["valid"]
                           if r["subset"] == "valid")
    best = max(scores, key=lambda s: (scores[s], -s))
    assert chosen.run.seed == best and chosen.score == pytest.approx(scores[best])


@pytest.mark.slow
def test_a_superglue_file_is_jsonl_with_idx_and_the_task_labels(runs, tmp_path):
    ehft("submit", runs["runs"], "--benchmark", "superglue", "--raw-root", shared(),
         "--only", "CB", "--out", tmp_path / "sg.zip")
    lines = zipfile.ZipFile(tmp_path / "sg.zip").read("CB.jsonl").decode().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 250 and all(set(r) == {"idx", "label"} for r in records)
    assert [r["idx"] for r in records] == [int(i) for i in ids_of(
        "cb", shared("superglue", "CB", "test.jsonl"))]
    assert {r["label"] for r in records} <= {"entailment", "contradiction", "neutral"}


@pytest.mark.slow
def test_bad_bundles_are_refused_in_one_line_and_nothing_is_written(runs, tmp_path):
    base = [runs["runs"], "--benchmark", "glue", "--raw-root", shared(), "--out",
            tmp_path / "b.zip"]
    unknown = ehft("submit", *base, "--only", "RTE", "XNLI", check=False)
    assert unknown.returncode == 2 and "--only XNLI: not a GLUE leaderboard file" in \
        unknown.stderr
    no_test = ehft("submit", *base, "--only", "SST-2", "--fill-missing", "majority", check=False)
    assert no_test.returncode == 2 and "SST-2.tsv's test file not found under --raw-root" in \
        no_test.stderr
    unread = ehft("submit", runs["runs"], "--benchmark", "superglue", "--raw-root", tmp_path,
                  "--out", tmp_path / "b.zip", "--only", "CB", check=False)
    assert unread.returncode == 2 and "CB.jsonl's test file not found" in unread.stderr
    assert not (tmp_path / "b.zip").exists()
    assert len(no_test.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_runs_of_another_backbone_for_one_task_are_refused(runs, tmp_path):
    other = tmp_path / "other" / "model.pt"  # another pretrained checkpoint for STS-B
    other.parent.mkdir()
    shutil.copyfile(runs["checkpoint"], other)
    root = tmp_path / "runs"
    shutil.copytree(runs["runs"] / "rte", root / "rte")
    train(runs["tmp"] / "stsb" / "bin", other, root)
    refused = ehft("submit", root, "--benchmark", "glue", "--raw-root", shared(), "--only",
                   "RTE", "STS-B", "--out", tmp_path / "b.zip", check=False)
    assert refused.returncode == 2
    assert "a submission is one model family" in refused.stderr
    assert str(other) in refused.stderr
    assert not (tmp_path / "b.zip").exists()


def test_boolean_labels_are_written_as_the_leaderboard_reads_them():
    from ehft_plugin.interop.submit import LEADERBOARDS, _format

    boolq = next(e for e in LEADERBOARDS["superglue"] if e.file == "BoolQ.jsonl")
    text = _format(boolq, get_task("boolq"), [("0", True), ("1", False)])
    assert text == '{"idx": 0, "label": "true"}\n{"idx": 1, "label": "false"}\n'
    copa = next(e for e in LEADERBOARDS["superglue"] if e.file == "COPA.jsonl")
    assert _format(copa, get_task("copa"), [("3", 1)]) == '{"idx": 3, "label": 1}\n'
