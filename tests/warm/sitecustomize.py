"""Run by every Python process the tests start (tests/warm is first on their PYTHONPATH): a
program that warm.py can run warm is handed over to the worker's server (warm.py says how)."""

import os
import sys

if os.environ.get("EHFT_WARM_SOCKET") and os.environ.get("EHFT_COLD") != "1":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import warm

    del sys.path[0]
    _program = warm.program(sys.orig_argv, os.environ)
    if _program is not None:
        _kind, _name = _program
        _argv = sys.orig_argv[2:] if _kind == "script" else sys.orig_argv[3:]
        warm.hand_over(os.environ["EHFT_WARM_SOCKET"], _kind, _name, _argv)
