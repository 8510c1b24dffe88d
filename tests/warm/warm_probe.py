"""A program for tests/test_warm.py to start warm: `python -m warm_probe WHAT [ARG]`."""

import json
import os
import subprocess
import sys
import time

what = sys.argv[1]
if what == "describe":
    print(json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "probe": os.environ.get("PROBE"),
                      "stdin": sys.stdin.readline().strip(), "pid": os.getpid(),
                      "parent": os.getppid(), "preloaded": "fairseq_cli.train" in sys.modules}))
elif what == "exit":
    sys.exit(int(sys.argv[2]) if sys.argv[2].isdigit() else sys.argv[2])
elif what == "raise":
    raise ValueError("raised by the probe")
elif what == "wait":  # prints its pid and a child's, then waits to be signalled or killed
    child = subprocess.Popen(["sleep", "600"])
    print(os.getpid(), child.pid, flush=True)
    time.sleep(600)
