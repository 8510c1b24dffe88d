"""benchmarks.records: an experiment's run records as one JSONL file that gives every file back
byte for byte, and the committed figures recomputed from the committed records."""

import json
import subprocess
import sys

import pytest
from conftest import REPO

from benchmarks import records
from ehft_plugin.train.rundir import write_done, write_run_record


def _experiment(root):
    """An experiment folder with two runs in two runs/ trees, as the grid scripts leave them."""
    root.mkdir()
    (root / records.CONFIG).write_text(json.dumps({"report": [], "outputs": []}))
    for rel, seed in (("runs/cb/ft/seed1", 1), ("sweep/lr1e-05/runs/cb/ft/seed2", 2)):
        run = root / rel
        run.mkdir(parents=True)
        write_run_record(str(run), "cb", {"method": "ft", "seed": seed, "stages": []}, {})
        (run / "finetune").mkdir()
        write_done(str(run / "finetune"), 10, "accuracy", [{"valid_accuracy": "71.4"}],
                   software={"torch": "x"}, seconds={"fairseq_train": 3.5})
        (run / "machine.json").write_text(json.dumps({"cores": 2}) + "\n")
        (run / "finetune" / "checkpoint_last.pt").write_bytes(b"not a record")
    return root


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))
            if "runs" in p.parts}


def test_pack_then_unpack_gives_every_record_back_byte_for_byte(tmp_path):
    experiment = _experiment(tmp_path / "exp")
    before = _files(experiment)
    assert records.pack(str(experiment)) == 2
    lines = (experiment / records.RECORDS).read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == [
        "runs/cb/ft/seed1", "sweep/lr1e-05/runs/cb/ft/seed2"]
    assert "checkpoint" not in lines[0]  # records only: no checkpoints
    assert records.unpack(str(experiment), str(tmp_path / "copy")) == len(before)
    assert _files(tmp_path / "copy") == before
    # unpacking over the runs it was packed from writes nothing and changes nothing
    assert records.unpack(str(experiment)) == 0 and _files(experiment) == before


def test_a_record_that_would_not_come_back_unchanged_is_refused(tmp_path):
    experiment = _experiment(tmp_path / "exp")
    done = experiment / "runs" / "cb" / "ft" / "seed1" / "finetune" / "done.json"
    done.write_text(json.dumps(json.loads(done.read_text())))  # on one line: not rundir's
    with pytest.raises(SystemExit, match="done.json is not written as its writer writes it"):
        records.pack(str(experiment))
    assert not (experiment / records.RECORDS).exists()


def test_unpack_never_overwrites_a_run_that_differs_from_its_record(tmp_path):
    experiment = _experiment(tmp_path / "exp")
    records.pack(str(experiment))
    machine = experiment / "runs" / "cb" / "ft" / "seed1" / "machine.json"
    machine.write_text(json.dumps({"cores": 16}) + "\n")  # a newer run on disk
    with pytest.raises(SystemExit, match="machine.json differs from its record"):
        records.unpack(str(experiment))
    assert json.loads(machine.read_text()) == {"cores": 16}


def test_a_bad_records_line_is_named(tmp_path):
    experiment = _experiment(tmp_path / "exp")
    (experiment / records.RECORDS).write_text('{"path": "runs/a", "files": {}}\nnot json\n')
    with pytest.raises(SystemExit, match=r"records.jsonl line 2: "):
        records.unpack(str(experiment))
    (experiment / records.RECORDS).write_text('{"path": "../../elsewhere", "files": {}}\n')
    with pytest.raises(SystemExit, match="is not a run directory inside a runs/ tree"):
        records.unpack(str(experiment))


def test_the_committed_experiments_are_the_declared_ones():
    found = records.experiments()
    assert {"accuracy", "accuracy-converged", "accuracy-stage1", "stage1/probe"} <= set(found)
    for name, folder in found.items():
        config = records.read_config(folder)
        assert config["asks"] and config["report"] and config["outputs"], name
        assert (REPO / "benchmarks" / name / "README.md").is_file(), name
        assert records.read_records(folder), name  # records.jsonl is committed and readable


@pytest.mark.slow
def test_every_committed_figure_is_recomputed_from_the_committed_records():
    result = subprocess.run([sys.executable, "-m", "benchmarks.records", "check"],
                            capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "every figure of accuracy, " in result.stdout
