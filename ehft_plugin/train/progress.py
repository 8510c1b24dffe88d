"""Where an `ehft train` stage stands, read from fairseq's JSON log as it grows.

fairseq-train's own output goes to the stage's `fairseq.out` (its log, complete, stays in
`train.log`); the user sees one line per stage: the update out of the stage's budget, the
last training loss, the last and best dev score, the time spent and an estimate of the time
left. On a terminal the line is rewritten in place and kept at every validation; elsewhere
(a log file, a pipe) a plain line is written at every validation and every `every` updates.
fairseq writes a training record every --log-interval updates (100 by default): a finer
line needs `-- --log-interval N`.
"""

import os
import sys
import time

MODES = ("progress", "quiet", "fairseq")
OUTPUT = "fairseq.out"  # fairseq-train's console output, in the stage's directory


def duration(seconds):
    seconds = int(round(seconds))
    if seconds >= 3600:
        return "%dh%02dm" % (seconds // 3600, seconds % 3600 // 60)
    return "%dm%02ds" % (seconds // 60, seconds % 60) if seconds >= 60 else "%ds" % seconds


class StageWatch:
    """Follows one stage's --log-file (`log`) while its fairseq-train runs."""

    def __init__(self, log, label, total, metric, out, live=False, every=0, capped=False):
        self.log, self.label, self.total, self.metric = log, label, total, metric
        self.out, self.live, self.every, self.capped = out, live, every, capped
        self.offset = os.path.getsize(log) if os.path.isfile(log) else 0
        self.previous = None
        self.updates = self.loss = self.dev = self.best = None
        self.first = None  # (update, time) of the first record of this launch
        self.started = time.time()
        self.printed_at = None
        self.dirty = False

    def poll(self):
        """Reads what the log gained; writes a line where one is due."""
        if not os.path.isfile(self.log):
            return
        with open(self.log) as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind("\n") + 1  # a line still being written waits for the next poll
        self.offset += len(chunk[:end].encode())
        for line in chunk[:end].splitlines(keepends=True):
            if line == self.previous:  # fairseq's repeated handler lines (rundir/logs.py)
                continue
            self.previous = line
            self._record(line)

    def _record(self, line):
        from .rundir.logs import stats_of

        stats = stats_of(line)
        if stats is None:
            return
        dev = next((k for k in stats if k.startswith("valid") and k.endswith("_" + self.metric)
                    and "_best_" not in k), None)
        if dev is not None:
            self.dev = float(stats[dev])
            self.best = self.dev if self.best is None else max(self.best, self.dev)
            prefix = dev[:-len(self.metric)]
            if prefix + "num_updates" in stats:
                self._updates(float(stats[prefix + "num_updates"]))
            self._write(keep=True)
        elif "num_updates" in stats and "loss" in stats:
            self._updates(float(stats["num_updates"]))
            self.loss = float(stats["loss"])
            due = self.every and (self.printed_at is None
                                  or self.updates - self.printed_at >= self.every)
            if self.live:
                self._write(keep=False)
            elif due:
                self._write(keep=True)

    def _updates(self, value):
        self.updates = int(value)
        if self.first is None:
            self.first = (self.updates, time.time())

    def status(self):
        parts = ["%s: update %s of %s%d" % (self.label, self.updates if self.updates is not None
                                            else 0, "at most " if self.capped else "",
                                            self.total)]
        if self.loss is not None:
            parts.append("loss %.3f" % self.loss)
        if self.dev is not None:
            parts.append("dev %s %.2f (best %.2f)" % (self.metric, self.dev, self.best))
        elapsed = time.time() - self.started
        parts.append(duration(elapsed))
        if self.first is not None and self.updates is not None and self.updates > self.first[0]:
            rate = (time.time() - self.first[1]) / (self.updates - self.first[0])
            left = max(0, self.total - self.updates) * rate
            parts.append("ETA %s%s" % ("at most " if self.capped else "", duration(left)))
        return ", ".join(parts)

    def _write(self, keep):
        text = self.status()
        if self.live:
            self.out.write("\r\033[K" + text + ("\n" if keep else ""))
            self.dirty = not keep
        else:
            self.out.write(text + "\n")
        self.printed_at = self.updates
        self.out.flush()

    def finish(self):
        self.poll()
        if self.live and self.dirty:
            self.out.write("\n")
            self.out.flush()


def tail(path, lines=20):
    """The last `lines` lines of a file, for an error message."""
    if not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


class Display:
    """How `ehft train` shows its stages: `progress` (a line per stage, as above), `quiet`
    (nothing but warnings and errors) or `fairseq` (fairseq-train's own output, unchanged).
    Under progress and quiet, fairseq-train's output goes to the stage's fairseq.out."""

    def __init__(self, mode="progress", out=None, every=0):
        if mode not in MODES:
            raise ValueError("display mode %r: expected one of %s" % (mode, ", ".join(MODES)))
        self.mode, self.out = mode, out or sys.stdout
        self.live = self.mode == "progress" and hasattr(self.out, "isatty") and self.out.isatty()
        self.every = every

    @property
    def captures(self):
        return self.mode != "fairseq"

    def watch(self, log, label, total, metric, capped=False):
        if self.mode != "progress":
            return None
        every = self.every or max(1, total // 10)
        return StageWatch(log, label, total, metric, self.out, self.live, every, capped)

    def line(self, text):
        if self.mode == "progress":
            self.out.write(text + "\n")
            self.out.flush()


def run_summary(run_dir, stages):
    """One line for a finished run: each stage's trained updates and best dev score, and
    the wall time of the stages' records. `stages`: [(name, done.json record or None)]."""
    from .rundir.files import wall_seconds

    parts, seconds = [], 0.0
    for name, done in stages:
        if not done:
            continue
        values = [float(r[k]) for r in done.get("valid", ()) for k in r
                  if k == r.get("subset", "valid") + "_" + done["metric"]]
        parts.append("%s %d updates%s" % (
            name, done.get("trained_updates") or done["updates"],
            ", best dev %s %.2f" % (done["metric"], max(values)) if values else ""))
        seconds += wall_seconds(done.get("seconds", {}))
    return "%s: done: %s (%s)" % (run_dir, "; ".join(parts), duration(seconds))
