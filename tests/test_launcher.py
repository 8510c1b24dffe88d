"""`ehft train`: two stages, the hand-over, resuming, and refusing what would lose work."""

import json
import re
import shutil

import pytest
import torch
from conftest import ehft, prepare_rte, run, stock_checkpoint, train_output

import ehft_plugin
from ehft_plugin.train.handover import HEAD_FORMAT
from ehft_plugin.train.handover import write_stage_start as stage_start
from ehft_plugin.train.pretrained import read_original
from ehft_plugin.train.rundir import Run, record_launch, training_seconds
from ehft_plugin.peft.checkpoints import load_tensors
from ehft_plugin.errors import EhftError

FAIRSEQ = ["--", "--cpu", "--num-workers", "0", "--max-positions", "128", "--dropout", "0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launcher")
    data = prepare_rte(tmp, rows=40)
    # a stock 2-layer RoBERTa as "the pretrained checkpoint" (it carries a head: the launcher
    # must not use it, each method starts with a new head or stage 1's)
    checkpoint = stock_checkpoint(data, tmp / "pretrained")
    # --stage1-ratio: the 10%/90% split of a fixed total keeps these runs short (the default
    # stage 1, to a plateau, has tests of its own: test_stage1.py)
    args = ["--data", data, "--checkpoint", checkpoint, "--total-updates", "6",
            "--batch-size", "8", "--stage1-ratio", "0.1"]
    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", tmp / "runs", *args,
                  *FAIRSEQ)
    return {"tmp": tmp, "data": data, "checkpoint": checkpoint, "args": args,
            "run": tmp / "runs" / "rte" / "ehft-bitfit" / "seed1",
            "log": train_output(result, tmp / "runs" / "rte" / "ehft-bitfit" / "seed1"),
            "stdout": result.stdout}


@pytest.mark.slow
def test_run_directory_layout_and_budget(setup):
    run_dir = setup["run"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["updates"] == [1, 5]  # 10% / 90% of 6, same total as ft
    assert record["config"]["stages"] == [{"name": "stage1", "peft": "bitfit", "lr": 5e-4},
                                          {"name": "stage2", "peft": "full", "lr": 1e-5}]
    assert "--peft" in record["commands"]["stage1"] and "--max-update" in record["commands"][
        "stage2"]
    for stage, updates in (("stage1", 1), ("stage2", 5)):
        done = json.loads((run_dir / stage / "done.json").read_text())
        assert done["updates"] == updates and "valid_accuracy" in done["valid"][-1]
        assert done["software"]["torch"] == torch.__version__  # what made the record
        assert done["software"]["ehft_plugin"] == ehft_plugin.__version__
        assert (run_dir / stage / "checkpoint_last.pt").is_file()
        # how long it took: the process, within it fairseq's own training loop
        seconds = done["seconds"]
        assert seconds["fairseq_train"] > seconds["training"] > 0
        assert seconds["start_checkpoint"] >= 0  # the original, its head stripped
        # one launch, recorded beside the stage; nothing earlier to charge
        assert done["launches"] == 1 and "earlier_launches" not in seconds
        assert [json.loads(line)["exit"] for line in
                (run_dir / stage / "launches.jsonl").read_text().splitlines()] == [0]
    assert "hand_over" in json.loads((run_dir / "stage1" / "done.json").read_text())["seconds"]
    assert not (run_dir / "stage2" / "start.pt").exists()  # rebuilt on demand, not kept


def test_the_training_time_is_the_last_launch_that_finished(tmp_path):
    log = tmp_path / "train.log"
    assert training_seconds(str(log)) is None  # no log
    log.write_text('{"epoch": 1}\ndone training in 12.5 seconds\n{"epoch": 2}\n'
                   "done training in 3.25 seconds\n")
    assert training_seconds(str(log)) == 3.25
    log.write_text('{"epoch": 1}\n')  # killed before it finished
    assert training_seconds(str(log)) is None


@pytest.mark.slow
def test_the_hand_over_file_holds_only_the_head(setup):
    head, metadata = load_tensors(str(setup["run"] / "stage1" / "head.safetensors"), HEAD_FORMAT)
    assert set(head) == {"classification_heads.sentence_classification_head.%s.%s" % (m, p)
                         for m in ("dense", "out_proj") for p in ("weight", "bias")}
    stage1 = torch.load(setup["run"] / "stage1" / "checkpoint_last.pt", weights_only=False)
    for key, value in head.items():
        assert torch.equal(value, stage1["model"][key])  # the final stage-1 head, all of it


@pytest.mark.slow
def test_stage2_starts_from_the_original_backbone_bit_for_bit_plus_the_stage1_head(setup,
                                                                                     tmp_path):
    start = stage_start(read_original(str(setup["checkpoint"])), str(setup["checkpoint"]),
                        str(setup["run"] / "stage1" / "head.safetensors"),
                        str(tmp_path / "start.pt"))
    started = torch.load(start, weights_only=False)["model"]
    original = torch.load(setup["checkpoint"], weights_only=False)["model"]
    stage1 = torch.load(setup["run"] / "stage1" / "checkpoint_last.pt", weights_only=False)
    backbone = [k for k in original if not k.startswith("classification_heads.")]
    bias = "encoder.sentence_encoder.layers.0.fc1.bias"
    assert not torch.equal(stage1["model"][bias], original[bias])  # BitFit moved it...
    for key in backbone:
        assert torch.equal(started[key], original[key]), key  # ...stage 2 does not see that
    for key in started:
        if key.startswith("classification_heads."):
            assert torch.equal(started[key], stage1["model"][key])
    assert "Loaded checkpoint %s" % (setup["run"] / "stage2" / "start.pt") in setup["log"]


@pytest.mark.slow
def test_a_relaunch_skips_finished_stages_and_resumes_an_interrupted_one(setup, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(setup["tmp"] / "runs", runs)
    run_dir = runs / "rte" / "ehft-bitfit" / "seed1"
    # interrupt stage 2 after 3 of its 5 updates: its recorded command, stopped early
    shutil.rmtree(run_dir / "stage2")
    (run_dir / "stage2").mkdir()
    stage_start(read_original(str(setup["checkpoint"])), str(setup["checkpoint"]),
                str(run_dir / "stage1" / "head.safetensors"), str(run_dir / "stage2" / "start.pt"))
    command = json.loads((run_dir / "run.json").read_text())["commands"]["stage2"]
    command = [c.replace(str(setup["run"]), str(run_dir)) for c in command]
    command[command.index("--max-update") + 1] = "3"
    run(command)
    # as a launcher that was stopped after 12.5 s records it
    record_launch(str(run_dir / "stage2"), 12.5, None)
    stage1_mtime = (run_dir / "stage1" / "checkpoint_last.pt").stat().st_mtime

    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", runs, *setup["args"],
                  *FAIRSEQ)
    log = train_output(result, run_dir)
    assert "stage1 already done, skipped" in log
    assert (run_dir / "stage1" / "checkpoint_last.pt").stat().st_mtime == stage1_mtime
    # stage 2 continued from its own checkpoint, not from the original, to its full budget
    assert re.search(r"Loaded checkpoint %s \(epoch \d+ @ 3 updates\)"
                     % re.escape(str(run_dir / "stage2" / "checkpoint_last.pt")), log)
    done = json.loads((run_dir / "stage2" / "done.json").read_text())
    assert done["valid"][-1]["valid_num_updates"] == "5"
    assert done["seconds"]["fairseq_train"] > done["seconds"]["training"] > 0  # the last launch
    # the stopped launch is charged too: the run's wall time holds both
    assert done["launches"] == 2 and done["seconds"]["earlier_launches"] == 12.5
    assert Run.read(str(run_dir)).wall_seconds() > 12.5 + done["seconds"]["fairseq_train"]


@pytest.mark.slow
def test_a_stage_trained_but_not_recorded_is_not_trained_again(setup, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(setup["tmp"] / "runs", runs)
    run_dir = runs / "rte" / "ehft-bitfit" / "seed1"
    (run_dir / "stage2" / "done.json").unlink()
    mtime = (run_dir / "stage2" / "checkpoint_last.pt").stat().st_mtime
    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", runs, *setup["args"],
                  *FAIRSEQ)
    assert "stage2 already trained for 5 updates" in result.stderr
    assert (run_dir / "stage2" / "checkpoint_last.pt").stat().st_mtime == mtime
    done = json.loads((run_dir / "stage2" / "done.json").read_text())
    assert "fairseq_train" not in done["seconds"]  # no training time is claimed for this launch
    # the launch that trained it is charged, from its record beside the stage
    first = json.loads((setup["run"] / "stage2" / "done.json").read_text())["seconds"]
    assert done["launches"] == 1
    assert done["seconds"]["earlier_launches"] == pytest.approx(
        first["fairseq_train"] + first["start_checkpoint"], abs=0.002)


@pytest.mark.slow
def test_a_stage_whose_log_holds_no_final_validation_is_not_recorded(setup, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(setup["tmp"] / "runs", runs)
    stage2 = runs / "rte" / "ehft-bitfit" / "seed1" / "stage2"
    (stage2 / "done.json").unlink()
    (stage2 / "train.log").unlink()  # trained, but its validations are gone
    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", runs, *setup["args"],
                  *FAIRSEQ, check=False)
    assert result.returncode == 2
    assert "stage2 of %s finished, but %s holds no validation at its last update" % (
        stage2.parent, stage2 / "train.log") in result.stderr
    assert not (stage2 / "done.json").exists()  # `ehft report` would have refused it
    assert (stage2 / "checkpoint_last.pt").is_file()  # the training is kept


@pytest.mark.slow
def test_a_run_directory_in_use_by_another_launcher_is_refused(setup, tmp_path):
    import os

    from ehft_plugin.train.locks import exclusive

    run_dir = tmp_path / "runs" / "rte" / "ft" / "seed1"
    with exclusive(run_dir, "ehft train"):
        result = ehft("train", "--method", "ft", "--save-dir", tmp_path / "runs",
                      *setup["args"], *FAIRSEQ, check=False)
    assert result.returncode == 2
    assert "%s is in use by another ehft train (pid %d" % (run_dir, os.getpid()) \
        in result.stderr
    assert not run_dir.exists()


@pytest.mark.slow
def test_the_lock_of_a_killed_launcher_is_free(tmp_path):
    import subprocess
    import sys

    from ehft_plugin.train.locks import exclusive

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from ehft_plugin.train.locks import exclusive\n"
        "with exclusive(sys.argv[1], 'ehft train'):\n"
        "    print('held', flush=True); time.sleep(60)"), str(tmp_path / "run")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(EhftError, match="in use by another ehft train"):
        with exclusive(tmp_path / "run", "ehft train"):
            pass
    holder.kill()  # SIGKILL: no clean-up code runs
    holder.wait()
    with exclusive(tmp_path / "run", "ehft train"):
        pass


@pytest.mark.slow
def test_a_run_directory_with_other_settings_or_files_is_refused(setup, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(setup["tmp"] / "runs", runs)
    args = [a if a != "6" else "8" for a in setup["args"]]
    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", runs, *args, *FAIRSEQ,
                  check=False)
    assert result.returncode == 2
    assert "holds a run with other settings (total_updates, updates); pass --overwrite" \
        in result.stderr
    assert (runs / "rte" / "ehft-bitfit" / "seed1" / "stage2" / "done.json").is_file()  # kept
    other = tmp_path / "other" / "rte" / "ft" / "seed1"
    other.mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    result = ehft("train", "--method", "ft", "--save-dir", tmp_path / "other", *setup["args"],
                  *FAIRSEQ, check=False)
    assert result.returncode == 2 and "holds files of something else" in result.stderr
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_corrupt_head_file_stops_stage2_with_a_clear_error(setup, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(setup["tmp"] / "runs", runs)
    run_dir = runs / "rte" / "ehft-bitfit" / "seed1"
    (run_dir / "stage2" / "done.json").unlink()
    (run_dir / "stage1" / "head.safetensors").write_bytes(b"garbage")
    result = ehft("train", "--method", "ehft-bitfit", "--save-dir", runs, *setup["args"],
                  *FAIRSEQ, check=False)
    assert result.returncode == 2
    assert "head.safetensors: not a readable safetensors file" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("change,message", [
    (["--method", "ehft-sgd"], "unknown --method 'ehft-sgd'"),
    (["--method", "ehft-bitfit", "--stage1-ratio", "1.5"],
     "--stage1-ratio 1.5: expected a number strictly between 0 and 1"),
    (["--method", "ft", "--checkpoint", "/nonexistent/model.pt"],
     "--checkpoint /nonexistent/model.pt: file not found"),
])
def test_bad_input_is_refused_before_anything_runs(setup, tmp_path, change, message):
    args = list(setup["args"])
    if "--checkpoint" in change:
        i = args.index("--checkpoint")
        del args[i:i + 2]
    result = ehft("train", "--save-dir", tmp_path / "runs", *args, *change, check=False)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_checkpoint_for_another_dictionary_is_refused(setup, tmp_path):
    state = torch.load(setup["checkpoint"], weights_only=False)
    key = "encoder.sentence_encoder.embed_tokens.weight"
    state["model"][key] = state["model"][key][:1000]
    torch.save(state, tmp_path / "small-vocab.pt")
    args = [a for a in setup["args"]]
    args[args.index("--checkpoint") + 1] = tmp_path / "small-vocab.pt"
    result = ehft("train", "--method", "ft", "--save-dir", tmp_path / "runs", *args,
                  check=False)
    assert result.returncode == 2
    assert "has 1000 token embeddings but the dictionary of" in result.stderr


@pytest.mark.slow
def test_single_stage_methods_start_with_a_new_head(setup, tmp_path):
    result = ehft("train", "--method", "lora", "--save-dir", tmp_path / "runs", *setup["args"],
                  "--seeds", "3", *FAIRSEQ)
    run_dir = tmp_path / "runs" / "rte" / "lora" / "seed3"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["config"]["updates"] == [6]
    assert record["config"]["stages"] == [
        {"name": "finetune", "peft": "0-1:lora(r=32,alpha=32,targets=q+v)", "lr": 5e-4}]
    valid = json.loads((run_dir / "finetune" / "done.json").read_text())["valid"]
    assert "valid_accuracy" in valid[-1]
    # 5 batches an epoch: validations at the end of epoch 1 and at update 6, each once, and
    # once in train.log (stock fairseq writes epoch 2's log lines twice)
    assert [r["valid_num_updates"] for r in valid] == ["5", "6"]
    log = (run_dir / "finetune" / "train.log").read_text()
    assert log.count('"valid_num_updates": "6"') == 1
    assert not (run_dir / "finetune" / "head.safetensors").exists()  # nothing hands over
    # the pretrained file carries a head: the stage started from a copy without it
    assert "Loaded checkpoint %s" % (run_dir / "finetune" / "start.pt") in train_output(
        result, run_dir)
    assert not (run_dir / "finetune" / "start.pt").exists()


@pytest.mark.slow
def test_2019_releases_with_decoder_keys_are_read(setup, tmp_path):
    from ehft_plugin.train.pretrained import check_fits_data, model_args

    state = read_original(str(setup["checkpoint"]))
    state["model"] = {k.replace("encoder.sentence_encoder.", "decoder.sentence_encoder."): v
                      for k, v in state["model"].items()}
    check_fits_data(state, str(setup["data"]), "old.pt")  # no KeyError, sizes agree
    assert model_args(state)["encoder_layers"] == 2


@pytest.mark.slow
def test_reserve_stage2_starts_from_stage1_peft_parameters_and_trains_them(setup, tmp_path):
    from ehft_plugin.peft.checkpoints import load_adapter

    ehft("train", "--method", "ehft-lora-reserve", "--save-dir", tmp_path / "runs",
         *setup["args"], *FAIRSEQ)
    run_dir = tmp_path / "runs" / "rte" / "ehft-lora-reserve" / "seed1"
    peft, plan, _ = load_adapter(str(run_dir / "stage1" / "peft.safetensors"))
    assert peft and all(k.rsplit(".", 1)[-1] in ("lora_A", "lora_B") for k in peft)
    stage1 = torch.load(run_dir / "stage1" / "checkpoint_last.pt", weights_only=False)["model"]
    for key, value in peft.items():
        assert torch.equal(value, stage1[key])
    start = torch.load(stage_start(read_original(str(setup["checkpoint"])),
                                   str(setup["checkpoint"]),
                                   str(run_dir / "stage1" / "head.safetensors"),
                                   str(tmp_path / "start.pt"),
                                   str(run_dir / "stage1" / "peft.safetensors")),
                       weights_only=False)["model"]
    original = torch.load(setup["checkpoint"], weights_only=False)["model"]
    for key, value in start.items():
        expected = peft.get(key, stage1[key] if key.startswith("classification_heads.")
                            else original.get(key))
        assert torch.equal(value, expected), key
    stage2 = torch.load(run_dir / "stage2" / "checkpoint_last.pt", weights_only=False)["model"]
    lora_b = next(k for k in peft if k.endswith("lora_B"))
    assert not torch.equal(stage2[lora_b], peft[lora_b])  # the modules go on training...
    weight = "encoder.sentence_encoder.layers.0.fc1.weight"
    assert not torch.equal(stage2[weight], original[weight])  # ...with the whole backbone


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    # ehft-bitfit, lora and ehft-lora-reserve run in the tests above
    "ft", "lp", "lp-ft", "bitfit", "prefix", "topk-1", "spafit-1-1-II", "ehft-prefix",
    "ehft-spafit-0-1-I", "ehft-bitfit-reserve", "ehft-prefix-reserve"])
def test_every_method_runs_end_to_end(setup, tmp_path, method):
    ehft("train", "--method", method, "--save-dir", tmp_path, *setup["args"], *FAIRSEQ)
    [run_dir] = (tmp_path / "rte").iterdir()
    record = json.loads((run_dir / "seed1" / "run.json").read_text())
    assert record["config"]["method"] == method
    updates = 0
    for stage in record["config"]["stages"]:
        done = json.loads((run_dir / "seed1" / stage["name"] / "done.json").read_text())
        assert "valid_accuracy" in done["valid"][-1]
        updates += int(done["valid"][-1]["valid_num_updates"])
    assert updates == 6  # every method gets the same total


@pytest.mark.slow
def test_report_reads_real_run_directories(setup, tmp_path):
    ehft("report", setup["tmp"] / "runs", "--out", tmp_path / "results.md")
    done = json.loads((setup["run"] / "stage2" / "done.json").read_text())
    accuracy = max(float(r["valid_accuracy"]) for r in done["valid"])
    # † marks a cell whose stage 1 made no head (this tiny model's, at 50% on RTE)
    head = json.loads((setup["run"] / "stage1" / "done.json").read_text())["head"]
    row = "| ehft-bitfit | %.2f ±— (1)%s | %.2f |" % (accuracy, " †" if head["at_chance"] else "",
                                                      accuracy)
    assert row in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results-curves-rte.png").is_file()
    assert json.loads((setup["run"] / "run.json").read_text())["task"] == "rte"


@pytest.mark.slow
@pytest.mark.cold  # it looks for fairseq-train among the launcher's children
def test_sigterm_stops_the_launcher_and_its_fairseq_train(setup, tmp_path):
    # torchrun ends a failed job with SIGTERM to each launcher: training must not go on
    import os
    import signal
    import subprocess
    import time

    from conftest import BIN

    args = [a if a != "6" else "100000" for a in setup["args"]]  # --total-updates
    launcher = subprocess.Popen([str(BIN / "ehft"), "train", "--method", "ehft-bitfit",
                                 "--save-dir", str(tmp_path), *map(str, args), *FAIRSEQ],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "rte" / "ehft-bitfit" / "seed1" / "stage1" / "train.log"
    deadline = time.time() + 120
    while not (log.is_file() and '"num_updates"' in log.read_text()) and time.time() < deadline:
        time.sleep(0.5)
    children = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True,
                              text=True).stdout.split()
    assert len(children) == 1, "fairseq-train did not start within 120 s"
    os.kill(launcher.pid, signal.SIGTERM)
    assert launcher.wait(timeout=60) == 143
    deadline = time.time() + 30
    while os.path.exists("/proc/%s" % children[0]) and time.time() < deadline:
        time.sleep(0.2)
    assert not os.path.exists("/proc/%s" % children[0]), "fairseq-train outlived its launcher"
    # the stopped launch is recorded: a relaunch that finishes the stage is charged for it
    launches = (log.parent / "launches.jsonl").read_text().splitlines()
    assert len(launches) == 1
    assert json.loads(launches[0])["exit"] is None and json.loads(launches[0])["seconds"] > 0


@pytest.mark.slow
def test_a_dry_run_prints_the_commands_a_run_records_and_writes_nothing(setup, tmp_path):
    import shlex

    result = ehft("train", "--dry-run", "--method", "ehft-bitfit", "--save-dir",
                  setup["tmp"] / "runs", *setup["args"], *FAIRSEQ, cwd=tmp_path)
    lines = result.stdout.strip().splitlines()
    recorded = json.loads((setup["run"] / "run.json").read_text())["commands"]
    commands = [shlex.split(line) for line in lines if "fairseq-train" in line]
    assert commands == [recorded["stage1"], recorded["stage2"]]
    handover = [line for line in lines if line.startswith("ehft handover")]
    assert handover == ["ehft handover --stage1 %s --checkpoint %s --out %s" % (
        setup["run"] / "stage1" / "checkpoint_last.pt", setup["checkpoint"],
        setup["run"] / "stage2" / "start.pt")]
    dry = ehft("train", "--dry-run", "--method", "lora", "--save-dir", tmp_path / "runs",
               *setup["args"], *FAIRSEQ)
    assert "--peft 0-1:lora(r=32,alpha=32,targets=q+v)" in dry.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ehft_handover_writes_the_start_ehft_train_uses(setup, tmp_path):
    ehft("handover", "--stage1", setup["run"] / "stage1" / "checkpoint_last.pt",
         "--checkpoint", setup["checkpoint"], "--out", tmp_path / "start.pt")
    ours = torch.load(tmp_path / "start.pt", weights_only=False)["model"]
    expected = torch.load(stage_start(read_original(str(setup["checkpoint"])),
                                      str(setup["checkpoint"]),
                                      str(setup["run"] / "stage1" / "head.safetensors"),
                                      str(tmp_path / "expected.pt")), weights_only=False)["model"]
    assert ours.keys() == expected.keys()
    assert all(torch.equal(ours[k], expected[k]) for k in ours)
    result = ehft("handover", "--stage1", setup["checkpoint"], "--checkpoint",
                  setup["checkpoint"], "--out", tmp_path / "x.pt", "--head-name", "other",
                  check=False)
    assert result.returncode == 2 and "no classification head 'other'" in result.stderr
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flag,value,message", [
    ("--batch-size", "0", "--batch-size 0: expected an integer >= 1"),
    ("--lr-stage1", "-1e-3", "--lr-stage1 -0.001: expected a number > 0"),
    ("--total-updates", "0", "--total-updates 0: expected an integer >= 1"),
    ("--warmup-ratio", "1", "--warmup-ratio 1.0: expected a number with 0 <= ratio < 1"),
    ("--stage1-ratio", "nan", "--stage1-ratio nan: expected a number strictly between 0 and 1"),
])
def test_numbers_out_of_range_are_refused_before_anything_is_read(tmp_path, flag, value,
                                                                  message):
    result = ehft("train", "--method", "ehft-bitfit", "--data", tmp_path / "missing",
                  "--checkpoint", tmp_path / "missing.pt", "--save-dir", tmp_path / "runs",
                  "--total-updates", "10", "%s=%s" % (flag, value), check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "ehft train: error: " + message
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ehft_train_shows_progress_lines_and_a_summary_per_run(setup):
    """Off a terminal: a line at every validation (and every --progress-every updates), then
    one line per finished run; fairseq-train's own output is in each stage's fairseq.out."""
    lines = setup["stdout"].splitlines()
    stage2 = [x for x in lines if x.startswith("rte/ehft-bitfit/seed1 stage2: update ")]
    assert stage2 and stage2[-1].startswith("rte/ehft-bitfit/seed1 stage2: update 5 of 5, ")
    assert re.search(r", dev accuracy \d+\.\d\d \(best \d+\.\d\d\), ", stage2[-1])
    summary = next(x for x in lines if ": done: " in x)
    assert summary.startswith(str(setup["run"]) + ": done: stage1 1 updates")
    assert "stage2 5 updates, best dev accuracy " in summary
    assert json.loads(lines[-1]) == {"run": str(setup["run"])}
    assert '"valid_accuracy"' not in setup["stdout"]  # fairseq's JSON is not echoed
    assert "fairseq_cli.train" in (setup["run"] / "stage2" / "fairseq.out").read_text()


@pytest.mark.slow
def test_quiet_prints_only_the_runs_and_a_failure_shows_fairseqs_last_lines(setup, tmp_path):
    result = ehft("train", "--method", "ft", "--save-dir", tmp_path / "q", *setup["args"],
                  "--quiet", *FAIRSEQ)
    assert [json.loads(x) for x in result.stdout.splitlines()] == [
        {"run": str(tmp_path / "q" / "rte" / "ft" / "seed1")}]
    result = ehft("train", "--method", "ft", "--save-dir", tmp_path / "f", *setup["args"],
                  *FAIRSEQ, "--lr-scheduler", "no-such-scheduler", check=False)
    assert result.returncode != 0
    assert "the end of fairseq-train's output, %s:" % (
        tmp_path / "f" / "rte" / "ft" / "seed1" / "finetune" / "fairseq.out") in result.stderr
    assert "no-such-scheduler" in result.stderr  # fairseq's own complaint, shown


@pytest.mark.slow
def test_patience_after_the_separator_ends_a_stage_that_a_relaunch_does_not_restart(setup,
                                                                                   tmp_path):
    """fairseq's --patience through `ehft train`: the stage stops when its dev metric has not
    improved for that many validations, is recorded as finished, and a relaunch keeps it."""
    args = [*setup["args"][:setup["args"].index("--total-updates")], "--total-updates", "40",
            "--batch-size", "8"]
    patience = [*FAIRSEQ, "--patience", "1", "--validate-interval-updates", "1"]
    first = ehft("train", "--method", "ft", "--save-dir", tmp_path, *args, *patience)
    stage = tmp_path / "rte" / "ft" / "seed1" / "finetune"
    done = json.loads((stage / "done.json").read_text())
    assert done["updates"] == 40 and done["trained_updates"] < 40  # stopped on its patience
    assert "early stop since valid performance hasn't improved" in (stage / "train.log").read_text()
    mtime = (stage / "checkpoint_last.pt").stat().st_mtime
    again = ehft("train", "--method", "ft", "--save-dir", tmp_path, *args, *patience)
    assert "already done, skipped" in again.stderr
    assert (stage / "checkpoint_last.pt").stat().st_mtime == mtime
    assert ": done: finetune %d updates" % done["trained_updates"] in first.stdout
