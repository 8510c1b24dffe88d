"""The run directory: what `ehft train` writes and `ehft report` / `ehft analyze` read.

    <save-dir>/<task>/<method>/seed<k>/
        run.json              the resolved configuration and every stage's command
        measured.json         what `ehft analyze` measured on the final checkpoint and the
                              stage-1 head, kept for when they are deleted
        stage1/ (or finetune/) fairseq save dir: checkpoints, train.log (JSON), done.json
                              (validations, the software that finished the stage, and how
                              long its fairseq-train took), launches.jsonl (each launch's
                              seconds and exit code: a resumed stage is charged for all)
        stage1/head.safetensors   the hand-over: stage 1's head (its best validation's, or
                              its last), nothing else
        stage1/peft.safetensors   -reserve variants only: stage 1's PEFT parameters
        finetune/child_mask.safetensors   child-tuning-d only: the child, chosen before the stage
        stage2/start.pt       original checkpoint + that head (removed once the stage is done;
                              also written, without head, for an original that holds one)

files.py: the paths and the records' formats; record.py: `RecordedConfig`, the configuration
run.json holds, typed; logs.py: fairseq's JSON log of a stage; run.py: `Run`, one run as its
readers see it.
"""

from .files import (BEST_CHECKPOINT, CHILD_MASK_FILE, DONE_RECORD, HEAD_FILE, LAST_CHECKPOINT,
                    LAUNCHES, LOG, PEFT_FILE, RUN_RECORD, START_FILE, RunError, find_run_dirs,
                    method_slug, read_json, record_launch, recorded_commands, recorded_launches,
                    run_directory, trained_updates, wall_seconds, write_done, write_run_record)
from .logs import (last_update, log_records, train_records, training_seconds, valid_records,
                   validated_at_the_end)
from .record import RecordedConfig, StageRecord
from .run import Run

__all__ = ["Run", "RunError", "RecordedConfig", "StageRecord", "BEST_CHECKPOINT",
           "CHILD_MASK_FILE", "last_update", "RUN_RECORD", "DONE_RECORD", "LAUNCHES", "LOG",
           "LAST_CHECKPOINT", "HEAD_FILE", "PEFT_FILE", "START_FILE", "find_run_dirs",
           "method_slug", "read_json",
           "record_launch", "recorded_commands", "recorded_launches", "run_directory",
           "trained_updates", "wall_seconds", "write_done",
           "write_run_record", "log_records", "train_records", "training_seconds",
           "valid_records", "validated_at_the_end"]
