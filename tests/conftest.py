"""Shared helpers: paths to the real data, a tiny RoBERTa, and CLI runners."""

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EHFT_SHARED_DATA", REPO.parent / "shared" / "data"))
BIN = Path(sys.executable).parent  # fairseq-train and ehft live next to this python

# The tiny RoBERTa of every test, fast and deterministic: 2 layers, 16 dims, 4 heads, no
# dropout. TINY_ROBERTA spells it as fairseq-train flags; tiny_model() builds it in-process.
TINY = {"encoder_layers": 2, "encoder_embed_dim": 16, "encoder_ffn_embed_dim": 32,
        "encoder_attention_heads": 4, "dropout": 0, "attention_dropout": 0,
        "max_positions": 128}
TINY_ROBERTA = ["--arch", "roberta_base", *(
    part for name, value in TINY.items() for part in ("--" + name.replace("_", "-"), str(value)))]


# `make test-fast` (EHFT_FAST_LANE=1, -m "not slow"): in-process tests only. A test that starts
# a process there fails at once, naming the mark it needs, so the lane stays fast.
FAST_LANE = os.environ.get("EHFT_FAST_LANE") == "1"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts processes (fairseq-train, ehft, torchrun, "
                                       "a benchmark script); left out of `make test-fast`")
    config.addinivalue_line("markers", "cold: its processes start cold, not forked from the "
                                       "worker's warm server (tests/warm/warm.py)")


# The processes the tests start are forked from a server that has imported torch and fairseq
# (tests/warm/warm.py), one per worker; EHFT_COLD=1 starts every one cold.
WARM = REPO / "tests" / "warm"
_warm_server = None


def pytest_sessionstart(session):
    global _warm_server
    config = session.config
    controller = getattr(config.option, "numprocesses", None) and not hasattr(
        config, "workerinput")
    if FAST_LANE or controller or os.environ.get("EHFT_COLD") == "1":
        return
    import tempfile

    directory = tempfile.mkdtemp(prefix="ehft-warm-")
    path = os.path.join(directory, "socket")
    _warm_server = subprocess.Popen([sys.executable, str(WARM / "warm.py"), path],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if _warm_server.poll() is not None or time.monotonic() > deadline:
            _warm_server.kill()
            _warm_server = None
            shutil.rmtree(directory, True)
            return  # every process starts cold, as it would without the server
        time.sleep(0.05)
    os.environ["EHFT_WARM_SOCKET"] = path
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(WARM), os.environ.get("PYTHONPATH")) if p)


def pytest_sessionfinish(session):
    if _warm_server is not None:
        _warm_server.terminate()
        _warm_server.wait()
        shutil.rmtree(os.path.dirname(os.environ.pop("EHFT_WARM_SOCKET")), True)


def _no_process(self, *args, **kwargs):
    raise RuntimeError("this test started a process (%s) in the fast lane: mark it "
                       "@pytest.mark.slow" % (args[0] if args else kwargs.get("args"),))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    # before any fixture of the test is set up, module- and session-scoped ones included
    if FAST_LANE and item.get_closest_marker("slow") is None:
        item._ehft_popen = subprocess.Popen.__init__
        subprocess.Popen.__init__ = _no_process
    if item.get_closest_marker("cold") is not None and "EHFT_COLD" not in os.environ:
        os.environ["EHFT_COLD"] = "1"
        item._ehft_cold = True
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    yield
    if hasattr(item, "_ehft_popen"):
        subprocess.Popen.__init__ = item._ehft_popen
    if hasattr(item, "_ehft_cold"):
        del os.environ["EHFT_COLD"]


def shared(*parts) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip("real data not found at %s (set EHFT_SHARED_DATA)" % path)
    return path


def gpt2_flags():
    bpe = shared("bpe")
    return ["--bpe", "gpt2", "--gpt2-encoder-json", str(bpe / "encoder.json"),
            "--gpt2-vocab-bpe", str(bpe / "vocab.bpe"), "--srcdict", str(bpe / "dict.txt")]


def gpt2_spec():
    from ehft_plugin.data.tokenisers import TokeniserSpec

    bpe = shared("bpe")
    return TokeniserSpec(bpe="gpt2", srcdict=str(bpe / "dict.txt"),
                         gpt2_encoder_json=str(bpe / "encoder.json"),
                         gpt2_vocab_bpe=str(bpe / "vocab.bpe"))


def subset(raw_dir: Path, out_dir: Path, rows: int, headerless=()) -> Path:
    """Copy a raw task directory keeping the header and the first `rows` data rows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in raw_dir.iterdir():
        if f.suffix not in (".tsv", ".jsonl"):
            continue
        lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = 0 if f.suffix == ".jsonl" or f.name in headerless else 1
        (out_dir / f.name).write_text("".join(lines[: keep + rows]), encoding="utf-8")
    return out_dir


# What prepare_rte and stock_checkpoint made, once per test process (one per xdist worker):
# every call gets a copy of its own, so a test that changes its files changes nobody else's
_MADE = {}
_MADE_ROOT = None


def _made(key, make):
    """The directory `make(directory)` fills for `key`, made the first time it is asked for."""
    global _MADE_ROOT
    if key not in _MADE:
        if _MADE_ROOT is None:
            import atexit
            import tempfile

            _MADE_ROOT = Path(tempfile.mkdtemp(prefix="ehft-tests-"))
            atexit.register(shutil.rmtree, _MADE_ROOT, True)
        directory = _MADE_ROOT / str(len(_MADE))
        make(directory)
        _MADE[key] = directory
    return _MADE[key]


def prepare_rte(directory: Path, rows: int) -> Path:
    """`ehft prepare rte` on the first `rows` rows of the real RTE files; returns the data dir."""
    def make(out):
        raw = subset(shared("glue/RTE"), out / "raw", rows=rows)
        ehft("prepare", "rte", "--raw-dir", raw, "--out-dir", out / "bin", *gpt2_flags())

    shutil.copytree(_made(("rte", rows), make), directory, dirs_exist_ok=True)
    return directory / "bin"


def _digest(directory: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        if path.name != "ehft_task.json":  # it names the raw directory, the data does not
            digest.update(path.relative_to(directory).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def stock_checkpoint(data, save_dir: Path) -> Path:
    """A tiny RoBERTa (--arch roberta_base, 2 layers) finetuned 2 updates by stock fairseq
    (--task sentence_prediction, no plugin); it carries a 2-class head. Trained once per test
    process for the same data (training on CPU is deterministic), copied for each caller."""
    def make(out):
        run([BIN / "fairseq-train", data, "--task", "sentence_prediction", "--num-classes", "2",
             "--init-token", "0", "--separator-token", "2", "--criterion", "sentence_prediction",
             *TINY_ROBERTA, "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8",
             "--max-update", "2", "--cpu", "--save-dir", out, "--num-workers", "0",
             "--shorten-method", "truncate"])

    made = _made(("stock", _digest(data)), make)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(made / "checkpoint_last.pt", Path(save_dir) / "checkpoint_last.pt")
    return Path(save_dir) / "checkpoint_last.pt"


def free_port(span=1) -> int:
    """A port where `span` consecutive ports are free now, below Linux's ephemeral range so
    no outgoing connection takes it meanwhile; random, so that tests running side by side
    (pytest-xdist) or a lingering socket of an earlier run do not meet on a fixed number."""
    rng = random.Random(os.urandom(8))
    for _ in range(200):
        port = rng.randrange(20000, 32000 - span)
        try:
            for p in range(port, port + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no %d consecutive free ports in 20000-32000" % span)


def finish(jobs, timeout=300):
    """Every job's log (Popen jobs started with stdout piped, text, start_new_session=True)
    once all have ended. Past the deadline every job's process group is killed, torchrun's
    workers with it (no worker lingers to slow the rest of the suite), and the test fails
    showing the end of each log."""
    deadline = time.monotonic() + timeout
    logs = []
    try:
        for job in jobs:
            logs.append(job.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for job in jobs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
        logs += [job.communicate()[0] for job in jobs[len(logs):]]
        pytest.fail("still running after %d s, killed; the end of each job's log:\n%s" % (
            timeout, "\n-----\n".join(log[-3000:] for log in logs)))
    return logs


def run(cmd, cwd=None, check=True, env=None, timeout=None):
    """Run a console command; on failure show its output in the assertion."""
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                            env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (
            " ".join(map(str, cmd)), result.returncode, result.stdout[-3000:],
            result.stderr[-5000:]))
    return result


def ehft(*args, **kwargs):
    return run([BIN / "ehft", *args], **kwargs)


def benchmark_script(name, *args):
    """`python -m benchmarks.NAME ARGS` from the repository root; returns what it printed."""
    module = "benchmarks." + name[:-len(".py")]
    return run([sys.executable, "-m", module, *args], cwd=REPO, timeout=600).stdout


def load_benchmark(name):
    """The module benchmarks.NAME, imported in this process."""
    import importlib

    return importlib.import_module("benchmarks." + name)


def fairseq_train(data, save_dir, *extra, user_dir=None, updates=4, check=True, cwd=None):
    """fairseq-train with the plugin and a tiny model; returns (result, valid records)."""
    cmd = [
        BIN / "fairseq-train", data, "--user-dir", user_dir or REPO / "ehft_plugin",
        "--task", "glue_ehft", "--criterion", "sentence_prediction_ehft", *TINY_ROBERTA,
        "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8", "--max-update", str(updates),
        "--cpu", "--save-dir", save_dir, "--log-format", "json", "--log-interval", "1",
        "--num-workers", "0", "--seed", "1", "--no-epoch-checkpoints", *extra,
    ]
    result = run(cmd, check=check, cwd=cwd)
    return result, valid_records(result.stdout + result.stderr)


_VALID_LINE = re.compile(r"\| (valid\d*) \| (\{.*\})\s*$")


def valid_records(log: str):
    """The JSON stats fairseq logs after each validation, with the subset name added."""
    records = []
    for line in log.splitlines():
        match = _VALID_LINE.search(line)
        if match:
            records.append(dict(json.loads(match.group(2)), subset=match.group(1)))
    return records


@pytest.fixture
def clean_tmp(tmp_path):
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def train_output(result, *run_dirs) -> str:
    """What an `ehft train` printed, and what its fairseq-train children printed (each stage's
    fairseq.out: `ehft train` shows progress lines instead)."""
    text = result.stdout + result.stderr
    for run_dir in run_dirs:
        for out in sorted(Path(run_dir).glob("*/fairseq.out")):
            text += out.read_text()
    return text


# ---- the tiny model in-process (imports fairseq: only the tests that build one pay for it) ----

def tiny_dictionary(size=60):
    from fairseq.data import Dictionary

    d = Dictionary()
    for i in range(size):
        d.add_symbol("w%d" % i)
    d.add_symbol("<mask>")
    return d


def tiny_args(peft="full", layers=TINY["encoder_layers"], head_type="fairseq", **extra):
    """TINY as the arguments of the plugin's model, with a PEFT plan and a head type."""
    import argparse

    from ehft_plugin.models.roberta_ehft import roberta_ehft_base

    args = argparse.Namespace(**dict(
        TINY, encoder_layers=layers, activation_dropout=0.0, pooler_dropout=0.0, peft=peft,
        head_type=head_type, **extra))
    roberta_ehft_base(args)
    return args


def tiny_model(peft="full", num_classes=3, seed=0, **kwargs):
    """TINY built in-process with a classification head named "head"."""
    from types import SimpleNamespace

    import torch

    from ehft_plugin.models.roberta_ehft import RobertaEhftModel

    torch.manual_seed(seed)
    task = SimpleNamespace(source_dictionary=tiny_dictionary(),
                           max_positions=lambda: TINY["max_positions"])
    model = RobertaEhftModel.build_model(tiny_args(peft, **kwargs), task)
    model.register_classification_head("head", num_classes=num_classes)
    return model


def tiny_batch(seed=0, batch=4, length=12):
    """Token ids with <s> … </s> and right padding of different lengths."""
    import torch

    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, 60, (batch, length), generator=g)
    tokens[:, 0] = 0
    for i in range(batch):
        end = length - i * 2
        tokens[i, end - 1] = 2
        tokens[i, end:] = 1  # padding
    return tokens


def logits(model, tokens):
    return model(tokens, features_only=True, classification_head_name="head")[0]
