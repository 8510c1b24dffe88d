"""An experiment's raw records as one JSONL file, and its committed figures recomputed from it.

    .venv/bin/python -m benchmarks.records pack [EXPERIMENT ...]
    .venv/bin/python -m benchmarks.records unpack [EXPERIMENT ...]
    .venv/bin/python -m benchmarks.records check [EXPERIMENT ...]

An experiment is a folder of benchmarks/ with an `experiment.json` (what it asks, the command
that makes its figures, the files that command writes). The grid scripts write one record
directory per run under the folder's `runs/` trees (run.json, machine.json, each stage's
done.json: what `ehft report` reads); those trees are working copies, not committed:

- `pack` writes `records.jsonl`, one line per run directory (its path in the experiment and
  every JSON file in it), sorted by path, from the runs/ trees on disk;
- `unpack` writes the runs/ trees back from `records.jsonl`, byte for byte as the writers wrote
  them (a grid script resumes from them: run it on a fresh clone after `unpack`);
- `check` copies benchmarks/ without its runs/ trees to a temporary folder, unpacks every
  experiment there, deletes the files each experiment's report writes, runs the reports, and
  compares what they wrote with the committed files (plots are remade, not compared). Exit 1
  names every file that differs.
"""

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from ehft_plugin.atomic import write_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECORDS = "records.jsonl"
CONFIG = "experiment.json"


def experiments(root=HERE):
    """{name: folder} of the experiments under `root` (a folder with experiment.json, at any
    depth), in name order."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "runs" and not d.startswith((".", "__")))
        if CONFIG in files:
            found[os.path.relpath(folder, root)] = folder
    return dict(sorted(found.items()))


def read_config(folder):
    with open(os.path.join(folder, CONFIG)) as f:
        return json.load(f)


def run_dirs(folder):
    """Path (relative to `folder`) of every run directory of the experiment: a directory with a
    run.json inside one of its runs/ trees."""
    found = []
    for path, dirs, files in os.walk(folder):
        dirs.sort()
        parts = os.path.relpath(path, folder).split(os.sep)
        if "runs" in parts[:-1] and "run.json" in files:
            found.append("/".join(parts))
    return sorted(found)


def _json_files(run_dir):
    names = []
    for path, dirs, files in os.walk(run_dir):
        dirs.sort()
        names += [os.path.relpath(os.path.join(path, n), run_dir).replace(os.sep, "/")
                  for n in sorted(files) if n.endswith(".json")]
    return sorted(names)


def text_of(name, value):
    """The file's text as its writer wrote it: rundir's records indented by 2 with no final
    newline, the grid's machine.json on one line with one."""
    if os.path.basename(name) == "machine.json":
        return json.dumps(value) + "\n"
    return json.dumps(value, indent=2)


def pack(folder):
    """Rewrite folder/records.jsonl from its runs/ trees; returns the number of runs. Refuses a
    file that its writer's format would not give back byte for byte."""
    lines = []
    for rel in run_dirs(folder):
        files = {}
        for name in _json_files(os.path.join(folder, rel)):
            path = os.path.join(folder, rel, name)
            with open(path) as f:
                text = f.read()
            files[name] = json.loads(text)
            if text_of(name, files[name]) != text:
                raise SystemExit("records: %s is not written as its writer writes it; pack "
                                 "would not give it back unchanged" % path)
        lines.append(json.dumps({"path": rel, "files": files}))  # key order kept: byte-exact
    write_file(os.path.join(folder, RECORDS), "".join(line + "\n" for line in lines))
    return len(lines)


def read_records(folder):
    path = os.path.join(folder, RECORDS)
    if not os.path.isfile(path):
        return []
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
                if not isinstance(record.get("path"), str) or not isinstance(
                        record.get("files"), dict):
                    raise ValueError("expected {\"path\": ..., \"files\": {...}}")
            except ValueError as e:
                raise SystemExit("records: %s line %d: %s" % (path, number, e))
            records.append(record)
    return records


def unpack(folder, into=None):
    """Write every record of folder/records.jsonl under `into` (default: the folder itself);
    returns the number of files written. A file already there with other content is refused,
    so that a run on disk newer than the records is never overwritten."""
    into = into or folder
    written = 0
    for record in read_records(folder):
        parts = record["path"].split("/")
        if "runs" not in parts[:-1] or ".." in parts or os.path.isabs(record["path"]):
            raise SystemExit("records: %s: %r is not a run directory inside a runs/ tree"
                             % (os.path.join(folder, RECORDS), record["path"]))
        for name, value in record["files"].items():
            path = os.path.join(into, *parts, *name.split("/"))
            text = text_of(name, value)
            if os.path.isfile(path):
                with open(path) as f:
                    if f.read() != text:
                        raise SystemExit("records: %s differs from its record in %s; pack the "
                                         "runs on disk first, or remove it" % (
                                             path, os.path.join(folder, RECORDS)))
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            write_file(path, text)
            written += 1
    return written


def ensure_unpacked(folder):
    """For the grid scripts: the runs of folder's experiment on disk before a slice decides
    which cells are finished (a fresh clone has only records.jsonl). A folder outside
    benchmarks/ (a test's) belongs to no experiment."""
    folder = os.path.abspath(folder)
    while os.path.commonpath([folder, HERE]) == HERE and folder != HERE:
        if os.path.isfile(os.path.join(folder, CONFIG)):
            return unpack(folder)
        folder = os.path.dirname(folder)
    return 0


def check(names, keep=None):
    """Recompute the named experiments' figures from their records in a temporary copy of
    benchmarks/; returns the differing files' messages (empty: every figure reproduced)."""
    found = experiments()
    temp = keep or tempfile.mkdtemp(prefix="records-check-")
    try:
        copy = os.path.join(temp, "benchmarks")
        shutil.copytree(HERE, copy, ignore=shutil.ignore_patterns("runs", "__pycache__"))
        for folder in experiments(copy).values():
            unpack(folder)
        # experiments made by one command (stage1_grid's report makes three) run it once
        by_command = {}
        for name in names:
            config = read_config(found[name])
            by_command.setdefault(tuple(config["report"]), []).append((name, config))
        problems = []
        for command, made in by_command.items():
            for name, config in made:
                for rel in config["outputs"] + config.get("plots", []):
                    if os.path.exists(os.path.join(copy, name, rel)):
                        os.remove(os.path.join(copy, name, rel))
            result = subprocess.run([sys.executable, *command], cwd=temp,
                                    env=dict(os.environ, PYTHONPATH=temp),
                                    capture_output=True, text=True)
            if result.returncode != 0:
                problems.append("%s: `%s` failed:\n%s" % (", ".join(n for n, _ in made),
                                                          " ".join(command),
                                                          result.stderr[-2000:]))
                continue
            for name, config in made:
                problems += _remade(found[name], os.path.join(copy, name), name, config)
        return problems
    finally:
        if keep is None:
            shutil.rmtree(temp, ignore_errors=True)


def _remade(committed, remade, name, config):
    """Problems with what one experiment's report remade: an output that differs from the
    committed file, or a plot not made."""
    problems = []
    for rel in config["outputs"]:
        problems += _compare(os.path.join(committed, rel), os.path.join(remade, rel),
                             os.path.join(name, rel))
    for rel in config.get("plots", []):
        if not os.path.isfile(os.path.join(remade, rel)):
            problems.append("%s: not remade" % os.path.join(name, rel))
    return problems


def _compare(committed, remade, name):
    if not os.path.isfile(remade):
        return ["%s: not remade" % name]
    if not os.path.isfile(committed):
        return ["%s: remade, but not committed" % name]
    with open(committed) as f:
        old = f.read()
    with open(remade) as f:
        new = f.read()
    if old == new:
        return []
    diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), "committed",
                                     "recomputed", lineterm="", n=0))
    return ["%s differs from what its records give:\n%s" % (name, "\n".join(diff[:12]))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("pack", "unpack", "check"))
    parser.add_argument("experiments", nargs="*",
                        help="folders under benchmarks/ with an experiment.json (default: all)")
    args = parser.parse_args()
    found = experiments()
    unknown = [n for n in args.experiments if n not in found]
    if unknown:
        parser.error("unknown experiment %s; the experiments are %s" % (
            ", ".join(unknown), ", ".join(found)))
    names = args.experiments or list(found)
    if args.step == "check":
        problems = check(names)
        for problem in problems:
            print("records: " + problem)
        if problems:
            raise SystemExit("records: %d files are not what their records give" % len(problems))
        print("records: every figure of %s recomputed from its records" % ", ".join(names))
        return
    for name in names:
        if args.step == "pack":
            print("records: %s: %d runs in %s" % (name, pack(found[name]),
                                                  os.path.join(name, RECORDS)))
        else:
            print("records: %s: %d files written" % (name, unpack(found[name])))


if __name__ == "__main__":
    main()
