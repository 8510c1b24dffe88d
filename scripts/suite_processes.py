"""The processes a pytest run starts, counted by kind (fairseq-train, `ehft train`, `ehft
prepare`, a benchmark script ...) with the seconds they lived, in total and per test file.

Where the suite's time goes: every process that imports fairseq pays seconds before it does
anything, so the number of processes bounds the suite's time from below. Each Python process
of the run (pytest's workers, and everything they start, at any depth) appends one JSON line
when it exits, through a sitecustomize module put first on PYTHONPATH for the run; a process
killed by a signal writes none. Seconds of a process include those of its children (`ehft
train`'s include its fairseq-train stages'). Every process starts cold (EHFT_COLD=1: none is
forked from the suite's warm server, tests/warm/warm.py), so what is counted is what each
process would cost started on its own.

    .venv/bin/python scripts/suite_processes.py [--log FILE] -- -n 2 --dist loadfile tests
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

SITECUSTOMIZE = '''
import atexit, json, os, sys, time
_started = time.time()


def _record():
    try:
        with open(os.environ["EHFT_PROCESS_LOG"], "a") as f:
            f.write(json.dumps({"argv": sys.argv[:2], "seconds": round(time.time() - _started, 3),
                                "test": os.environ.get("PYTEST_CURRENT_TEST", "")}) + "\\n")
    except (KeyError, OSError):
        pass


atexit.register(_record)
'''


def kind(argv):
    """A process's kind from its argv: the console script's name (with its subcommand for
    `ehft`), the script Python ran (for `python -m`, the module's file), or `python -c`."""
    if not argv:
        return "python"
    name = os.path.basename(argv[0]) or "python"
    if name == "ehft" and len(argv) > 1:
        return "ehft " + argv[1]
    return "python -c" if name == "-c" else name


def summary(lines):
    """(rows [(kind, count, seconds)] by count, {test file: count} of processes started inside
    a test, pytest's own processes left out)."""
    count, seconds, by_file = collections.Counter(), collections.Counter(), collections.Counter()
    for line in lines:
        record = json.loads(line)
        if not record["test"]:
            continue  # pytest and its workers: they run the tests, a test did not start them
        k = kind(record["argv"])
        count[k] += 1
        seconds[k] += record["seconds"]
        by_file[record["test"].split("::")[0]] += 1
    return [(k, n, seconds[k]) for k, n in count.most_common()], dict(by_file.most_common())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", help="keep the per-process records here (JSON lines)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER,
                        help="after --: pytest's arguments")
    args = parser.parse_args()
    pytest_args = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    with tempfile.TemporaryDirectory(prefix="suite-processes-") as tmp:
        with open(os.path.join(tmp, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)
        log = os.path.abspath(args.log) if args.log else os.path.join(tmp, "processes.jsonl")
        open(log, "w").close()
        env = dict(os.environ, EHFT_PROCESS_LOG=log, EHFT_COLD="1",
                   PYTHONPATH=os.pathsep.join(p for p in (tmp, os.environ.get("PYTHONPATH"))
                                              if p))
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], env=env)
        with open(log) as f:
            rows, by_file = summary(f)
    print("\nprocesses started by tests (`%s`), by kind:" % " ".join(["pytest", *pytest_args]))
    for k, n, s in rows:
        print("  %5d  %8.0f s  %s" % (n, s, k))
    print("by test file:")
    for path, n in by_file.items():
        print("  %5d  %s" % (n, path))
    return code


if __name__ == "__main__":
    sys.exit(main())
