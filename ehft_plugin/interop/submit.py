"""`ehft submit`: a GLUE or SuperGLUE leaderboard bundle from a runs folder.

Per leaderboard file, the run that predicts it is chosen as `ehft report` chooses (runs of one
method; with `--select dev`, its setting with the best mean dev score), then the seed with the
best dev score (ties: the lower seed), and its final stage's checkpoint_best.pt predicts the
task's official test file under --raw-root. File names and formats are the leaderboards' (as
jiant's submission formatter writes them): GLUE `index<TAB>prediction` TSVs, MNLI-m/-mm from
one MNLI model, the diagnostic AX with it too; SuperGLUE `{"idx", "label"}` JSONL, AX-b and AX-g
with the RTE model, BoolQ's and WiC's labels as "true"/"false". The zip holds the files and a
README.txt saying which run made each (or that a file was filled with the train majority).
"""

import json
import os
import zipfile
from dataclasses import dataclass, replace
from typing import Optional, Tuple

from ..atomic import atomic_file
from ..data.readers import read_examples
from ..data.task_table import get_task
from ..errors import EhftError


@dataclass(frozen=True)
class Entry:
    """One leaderboard file: its name, the task whose model predicts it, its test file under
    --raw-root, and the text fields when the file names them otherwise than the task."""
    file: str
    task: Optional[str]  # None: a task the plugin has no reader for
    test: str
    fields: Tuple[str, ...] = ()


LEADERBOARDS = {
    "glue": (
        Entry("CoLA.tsv", "cola", "glue/CoLA/test.tsv"),
        Entry("SST-2.tsv", "sst2", "glue/SST-2/test.tsv"),
        Entry("MRPC.tsv", "mrpc", "glue/MRPC/test.tsv"),
        Entry("STS-B.tsv", "stsb", "glue/STS-B/test.tsv"),
        Entry("QQP.tsv", "qqp", "glue/QQP/test.tsv"),
        Entry("MNLI-m.tsv", "mnli", "glue/MNLI/test_matched.tsv"),
        Entry("MNLI-mm.tsv", "mnli", "glue/MNLI/test_mismatched.tsv"),
        Entry("QNLI.tsv", "qnli", "glue/QNLI/test.tsv"),
        Entry("RTE.tsv", "rte", "glue/RTE/test.tsv"),
        Entry("WNLI.tsv", "wnli", "glue/WNLI/test.tsv"),
        Entry("AX.tsv", "mnli", "glue/diagnostic/diagnostic.tsv"),
    ),
    "superglue": (
        Entry("BoolQ.jsonl", "boolq", "superglue/BoolQ/test.jsonl"),
        Entry("CB.jsonl", "cb", "superglue/CB/test.jsonl"),
        Entry("COPA.jsonl", "copa", "superglue/COPA/test.jsonl"),
        Entry("MultiRC.jsonl", None, "superglue/MultiRC/test.jsonl"),
        Entry("ReCoRD.jsonl", None, "superglue/ReCoRD/test.jsonl"),
        Entry("RTE.jsonl", "superglue-rte", "superglue/RTE/test.jsonl"),
        Entry("WiC.jsonl", "wic", "superglue/WiC/test.jsonl"),
        Entry("WSC.jsonl", None, "superglue/WSC/test.jsonl"),
        Entry("AX-b.jsonl", "superglue-rte", "superglue/AX-b/AX-b.jsonl",
              fields=("sentence1", "sentence2")),
        Entry("AX-g.jsonl", "superglue-rte", "superglue/AX-g/AX-g.jsonl"),
    ),
}
FILL = "majority"


class SubmitError(EhftError):
    """A bundle that cannot be made as asked."""


def stem(entry):
    return entry.file.rsplit(".", 1)[0]


def entries(benchmark, only=None):
    table = LEADERBOARDS[benchmark]
    if not only:
        return list(table)
    names = {stem(e).lower(): e for e in table}
    unknown = [n for n in only if n.lower() not in names]
    if unknown:
        raise SubmitError("--only %s: not a %s leaderboard file; expected some of %s"
                          % (unknown[0], benchmark.upper(), ", ".join(stem(e) for e in table)))
    return [names[n.lower()] for n in only]


@dataclass
class Chosen:
    run: object  # rundir.Run
    checkpoint: str
    score: float
    setting: str


def choose_runs(roots, method=None, on_dev=False):
    """{task: Chosen}: per task, the method's runs (refused when several methods and no
    --method), reduced to one setting as `ehft report` does, then the seed with the best dev
    score."""
    from ..evaluate.report import collect
    from ..evaluate.report.settings import check_poolable, select_on_dev

    runs, _ = collect(roots)
    by_task = {}
    for run in runs:
        by_task.setdefault(run.task, []).append(run)
    chosen = {}
    for task, group in sorted(by_task.items()):
        methods = sorted({r.method for r in group})
        if method is not None:
            group = [r for r in group if r.method == method]
            if not group:
                continue
        elif len(methods) > 1:
            raise SubmitError("runs of %s hold several methods (%s); pass --method to say which "
                              "one to submit" % (task, ", ".join(methods)))
        if on_dev:
            group, choices = select_on_dev(group)
            setting = next(row["setting"] for c in choices for row in c.settings
                           if row["chosen"])
        else:
            check_poolable(group)
            setting = "(one setting)"
        best = max(group, key=lambda r: (r.dev_score()[1], -r.seed))
        path = os.path.join(best.stage_dir(best.stages[-1]), "checkpoint_best.pt")
        if not os.path.isfile(path):
            raise SubmitError("%s: no checkpoint_best.pt to predict with" % best.path)
        chosen[task] = Chosen(best, path, best.dev_score()[1], setting)
    _check_one_family(chosen)
    return chosen


def _check_one_family(chosen):
    """A leaderboard entry is one model: every task's run starts from the same backbone."""
    seen = None
    for task, c in chosen.items():
        family = (c.run.config.checkpoint, c.run.config.arch)
        if seen is None:
            seen = (task, family)
        elif family != seen[1]:
            raise SubmitError(
                "runs of %s start from %s (%s) but runs of %s from %s (%s): a submission is one "
                "model family; pass runs of one backbone" % (
                    task, family[0], family[1], seen[0], seen[1][0], seen[1][1]))


def bundle(roots, benchmark, raw_root, out, method=None, on_dev=False, fill=None, only=None,
           device="cpu", batch_size=32):
    """Write the zip; returns a summary {files: {name: how}, missing: [...], filled: [...]}."""
    if not out.endswith(".zip"):
        raise SubmitError("--out %s: expected a .zip file name" % out)
    if not os.path.isdir(raw_root):
        raise SubmitError("--raw-root %s: no such directory (expected the folder holding "
                          "glue/ and superglue/ with the official test files)" % raw_root)
    wanted = entries(benchmark, only)
    chosen = choose_runs(roots, method, on_dev)
    missing = [e for e in wanted if e.task not in chosen]
    if missing and fill != FILL:
        raise SubmitError("no runs for %s; pass --fill-missing majority to fill %s with the "
                          "train majority class (or --only to leave %s out)" % (
                              ", ".join(stem(e) for e in missing),
                              "it" if len(missing) == 1 else "them",
                              "it" if len(missing) == 1 else "them"))
    for e in wanted:  # every input is checked before anything is predicted
        test = os.path.join(raw_root, e.test)
        if not os.path.isfile(test):
            raise SubmitError("%s: %s's test file not found under --raw-root" % (test, e.file))
        if e in missing:
            _check_fillable(benchmark, e, raw_root)
    written, readme = {}, []
    predictors = {}
    for e in wanted:
        test = os.path.join(raw_root, e.test)
        spec = _reading_spec(e)
        if e in missing:
            rows = _majority_rows(e, spec, _train_file(benchmark, e, spec, raw_root), test)
            how = "filled: the train majority class of %s (no run)" % e.task
        else:
            c = chosen[e.task]
            if e.task not in predictors:
                from .predict import Predictor

                predictors[e.task] = Predictor(c.checkpoint, batch_size=batch_size,
                                               device=device)
            predictor = predictors[e.task]
            examples = read_examples(spec, test, "test", labeled=False)
            rows, _ = predictor.predict_examples(examples)
            how = "%s seed %d (%s; dev %.2f), %s" % (c.run.method, c.run.seed, c.setting,
                                                     c.score, c.checkpoint)
        written[e.file] = _format(e, spec, rows)
        readme.append("%s: %s" % (e.file, how))
    absent = [stem(e) for e in LEADERBOARDS[benchmark] if e not in wanted]
    text = ["%s submission written by `ehft submit`." % benchmark.upper(), ""] + readme
    if absent:
        text += ["", "Not in this bundle (left out with --only): %s" % ", ".join(absent)]
    filled = [e.file for e in missing]
    if filled:
        text += ["", "Filled with the train majority class, not predicted by a model: %s"
                 % ", ".join(filled)]
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with atomic_file(out) as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            for name, content in written.items():
                z.writestr(name, content)
            z.writestr("README.txt", "\n".join(text) + "\n")
    return {"out": out, "files": dict(zip(written, readme)), "filled": filled,
            "not_in_bundle": absent}


def _reading_spec(entry):
    spec = get_task(entry.task) if entry.task else None
    if spec is not None and entry.fields:
        spec = replace(spec, text_fields=entry.fields)
    return spec


def _train_file(benchmark, entry, spec, raw_root):
    """The train file of the entry's task: beside the test file of the task's own entry (AX
    is filled from MNLI's train)."""
    main = next(e for e in LEADERBOARDS[benchmark] if e.task == entry.task)
    return os.path.join(raw_root, os.path.dirname(main.test), spec.splits["train"])


def _check_fillable(benchmark, entry, raw_root):
    """Refuse, before anything is predicted, a file --fill-missing cannot fill."""
    if entry.task is None:
        raise SubmitError("%s: the plugin has no reader for this task, so it cannot fill it; "
                          "pass --only without it" % entry.file)
    spec = _reading_spec(entry)
    if spec.kind == "regression":
        raise SubmitError("%s: a regression task has no majority class to fill it with"
                          % entry.file)
    train = _train_file(benchmark, entry, spec, raw_root)
    if not os.path.isfile(train):
        raise SubmitError("%s: %s's train file not found under --raw-root, needed to fill it"
                          % (train, entry.file))


def _majority_rows(entry, spec, train, test):
    examples = read_examples(spec, train, "train")
    counts = [0] * len(spec.labels)
    for ex in examples:
        counts[int(ex.label)] += 1
    majority = spec.labels[max(range(len(counts)), key=lambda i: (counts[i], -i))]
    return [(ex.example_id, majority) for ex in read_examples(spec, test, "test", labeled=False)]


def _format(entry, spec, rows):
    if entry.file.endswith(".jsonl"):
        from .predict import leaderboard_label

        return "".join(json.dumps({"idx": int(example_id), "label": leaderboard_label(label)})
                       + "\n" for example_id, label in rows)
    out = ["index\tprediction"]
    for example_id, label in rows:
        out.append("%s\t%s" % (example_id, "%.3f" % label if isinstance(label, float) else label))
    return "\n".join(out) + "\n"
