"""End to end on real data: ehft prepare -> fairseq-train --task glue_ehft -> ehft predict.

A tiny random RoBERTa trains for a few updates; what is checked is the plumbing:
the official metrics reach fairseq's logs, --best-checkpoint-metric selects a
checkpoint, and prediction from that checkpoint scores the dev file exactly as
fairseq's validation did.
"""

import json
import re

import pytest
from conftest import (BIN, REPO, ehft, fairseq_train, gpt2_flags, prepare_rte, run, shared,
                      subset, valid_records)
from test_readers import OFFICIAL_SAMPLES

# task, raw directory, dev file, metric keys fairseq must log
REAL_TASKS = [
    ("rte", "glue/RTE", "dev.tsv", ["accuracy"]),
    ("cb", "superglue/CB", "val.jsonl", ["acc_macro_f1", "accuracy", "macro_f1"]),
    ("copa", "superglue/COPA", "val.jsonl", ["accuracy"]),
    ("stsb", "glue/STS-B", "dev.tsv", ["pearson_spearman", "pearson", "spearman"]),
    ("cola", "glue/CoLA", "dev.tsv", ["mcc", "accuracy"]),
    ("mrpc", "glue/MRPC", "dev.tsv", ["acc_f1", "f1", "accuracy"]),
]


def _prepare(task, raw_dir, out_dir):
    ehft("prepare", task, "--raw-dir", raw_dir, "--out-dir", out_dir, *gpt2_flags())
    return json.loads((out_dir / "ehft_task.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("task,directory,dev_file,metric_keys", REAL_TASKS)
def test_train_logs_official_metrics_and_prediction_reproduces_them(
        tmp_path, task, directory, dev_file, metric_keys):
    headerless = ("train.tsv", "dev.tsv") if task == "cola" else ()
    # 45 rows: not a multiple of the batch size, so a dropped last batch would show
    raw = subset(shared(directory), tmp_path / "raw", rows=45, headerless=headerless)
    meta = _prepare(task, raw, tmp_path / "bin")
    assert meta["metrics"] == metric_keys

    best = metric_keys[0]
    _, records = fairseq_train(
        tmp_path / "bin", tmp_path / "ck", "--best-checkpoint-metric", best,
        "--maximize-best-checkpoint-metric", "--validate-interval-updates", "3",
        "--save-interval-updates", "3", updates=6,
    )
    final = records[-1]
    for key in metric_keys:
        assert "valid_" + key in final, "%s missing from %s" % (key, final)
    assert "valid_best_" + best in final  # --best-checkpoint-metric was found and tracked
    assert float(final["valid_best_" + best]) == max(float(r["valid_" + best]) for r in records)
    assert (tmp_path / "ck" / "checkpoint_best.pt").is_file()

    out = tmp_path / ("pred" + (".jsonl" if dev_file.endswith("jsonl") else ".tsv"))
    result = ehft("predict", "--checkpoint", tmp_path / "ck" / "checkpoint_last.pt",
                  "--input", raw / dev_file, "--out", out, "--labeled")
    scores = json.loads(result.stdout.strip().splitlines()[-1])["metrics"]
    for key in metric_keys:
        assert scores[key] == pytest.approx(float(final["valid_" + key]), abs=1e-3), key
    lines = out.read_text().splitlines()
    if out.suffix == ".tsv":
        assert lines[0] == "index\tprediction" and len(lines) == 46
    else:
        assert len(lines) == 45 and {"idx", "label"} == set(json.loads(lines[0]))


@pytest.mark.slow
def test_prediction_writes_the_glue_submission_for_a_test_file(tmp_path):
    raw = subset(shared("glue/RTE"), tmp_path / "raw", rows=24)
    _prepare("rte", raw, tmp_path / "bin")
    fairseq_train(tmp_path / "bin", tmp_path / "ck", updates=2)
    out = tmp_path / "RTE.tsv"
    ehft("predict", "--checkpoint", tmp_path / "ck" / "checkpoint_last.pt",
         "--input", raw / "test.tsv", "--out", out)
    lines = out.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    assert [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(24)]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"entailment", "not_entailment"}


@pytest.mark.slow
def test_several_validation_subsets_mnli_matched_and_mismatched(tmp_path):
    name, text, _, _ = OFFICIAL_SAMPLES["mnli"]
    header, row = text.splitlines()
    raw = tmp_path / "raw"
    raw.mkdir()
    cells = row.split("\t")
    rows = []
    for i, label in enumerate(["entailment", "neutral", "contradiction"] * 4):
        rows.append("\t".join([str(i)] + cells[1:-1] + [label]))
    body = header + "\n" + "\n".join(rows) + "\n"
    train_header = header.replace("\tlabel2\tlabel3\tlabel4\tlabel5", "")
    train_rows = ["\t".join(r.split("\t")[:11] + [r.split("\t")[-1]]) for r in rows]
    (raw / "train.tsv").write_text(train_header + "\n" + "\n".join(train_rows) + "\n")
    (raw / "dev_matched.tsv").write_text(body)
    (raw / "dev_mismatched.tsv").write_text(body.replace("\n0\t", "\n99\t"))
    meta = _prepare("mnli", raw, tmp_path / "bin")
    assert set(meta["splits"]) == {"train", "valid", "valid1"}
    _, records = fairseq_train(tmp_path / "bin", tmp_path / "ck", "--valid-subset", "valid,valid1",
                               updates=2)
    subsets = {r["subset"] for r in records}
    assert subsets == {"valid", "valid1"}
    assert all("valid1_accuracy" in r for r in records if r["subset"] == "valid1")


@pytest.mark.slow
def test_wic_word_reaches_the_model_as_a_third_segment(tmp_path):
    from fairseq.data import data_utils

    _, line, _, _ = OFFICIAL_SAMPLES["wic"]
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [json.loads(line) | {"idx": i, "label": bool(i % 2)} for i in range(16)]
    for name in ("train.jsonl", "val.jsonl"):
        (raw / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = _prepare("wic", raw, tmp_path / "bin")
    assert meta["segments"] == 3
    word = data_utils.load_indexed_dataset(str(tmp_path / "bin" / "input2" / "valid"), None)
    assert len(word[0]) == 2  # " place" is one BPE token, plus </s>
    _, records = fairseq_train(tmp_path / "bin", tmp_path / "ck", updates=2)
    assert "valid_accuracy" in records[-1]


@pytest.mark.slow
def test_user_dir_from_anywhere_points_at_the_installed_plugin(tmp_path):
    raw = subset(shared("glue/RTE"), tmp_path / "raw", rows=16)
    _prepare("rte", raw, tmp_path / "bin")
    plugin_dir = ehft("user-dir").stdout.strip()
    assert plugin_dir == str(REPO / "ehft_plugin")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _, records = fairseq_train(tmp_path / "bin", tmp_path / "ck", user_dir=plugin_dir,
                               updates=2, cwd=elsewhere)
    assert "valid_accuracy" in records[-1]


@pytest.mark.slow
def test_long_inputs_are_truncated_and_counted_and_every_dev_example_is_scored(tmp_path):
    from fairseq.data import data_utils

    raw = subset(shared("glue/RTE"), tmp_path / "raw", rows=37)
    _prepare("rte", raw, tmp_path / "bin")
    first, second = (data_utils.load_indexed_dataset(str(tmp_path / "bin" / d / "valid"), None)
                     for d in ("input0", "input1"))
    # <s> A </s> </s> B </s>: the binarised segments already end in </s>
    too_long = sum(int(a + b + 2 > 128) for a, b in zip(first.sizes, second.sizes))
    assert too_long > 0
    result, _ = fairseq_train(tmp_path / "bin", tmp_path / "ck", updates=1)
    log = result.stdout + result.stderr
    assert ("valid: %d of 37 inputs are longer than --max-positions 128; --shorten-method "
            "truncate" % too_long) in log
    # fairseq-validate reduces the whole dev set at once: its bsz is the number scored.
    # (fairseq main would drop the last 5 examples: 37 is not a multiple of 8)
    result = run([BIN / "fairseq-validate", tmp_path / "bin", "--user-dir", REPO / "ehft_plugin",
                  "--task", "glue_ehft", "--criterion", "sentence_prediction_ehft", "--cpu",
                  "--path", tmp_path / "ck" / "checkpoint_last.pt", "--batch-size", "8",
                  "--log-format", "json"])
    [record] = valid_records(result.stdout + result.stderr)
    assert float(record["valid_bsz"]) == 37


def test_criterion_with_a_task_that_is_not_glue_ehft_is_a_clear_error():
    from ehft_plugin.criterions.sentence_prediction_ehft import SentencePredictionEhftCriterion

    class OtherTask:
        target_dictionary = None

    with pytest.raises(TypeError, match=r"needs a task that knows its kind \(--task glue_ehft"):
        SentencePredictionEhftCriterion(OtherTask())


@pytest.mark.slow
def test_a_clashing_task_name_fails_loudly():
    probe = ("from fairseq.tasks import register_task, FairseqTask\n"
             "@register_task('glue_ehft')\n"
             "class Other(FairseqTask):\n    pass\n"
             "import ehft_plugin\n")
    result = run([BIN / "python", "-c", probe], check=False)
    assert result.returncode != 0
    assert "--task glue_ehft is already registered by __main__" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("flags,message", [
    (["--valid-subset", "valid,valid1"], r"input0/valid1.\{bin,idx\} not found; prepared "
                                         r"splits: train, valid"),
    (["--peft", "0:frozen"], r"layer 1 has no method"),
    (["--optimizer", "ehft_adamw", "--adam-eps", "0"], r"--adam-eps 0.0: expected a number > 0"),
    (["--length-window", "0"], r"--length-window 0: expected an integer >= 1"),
])
def test_plugin_errors_end_fairseq_train_as_one_line_with_status_2(tmp_path, flags, message):
    data = prepare_rte(tmp_path, rows=16)
    result, _ = fairseq_train(data, tmp_path / "ck", "--arch", "roberta_ehft_base", *flags,
                              updates=1, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.search("^fairseq-train: error: .*" + message,
                     result.stderr.strip().splitlines()[-1]), result.stderr[-2000:]
