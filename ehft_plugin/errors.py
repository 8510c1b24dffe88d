"""Errors the plugin raises for bad input: each names where and what was expected."""


class EhftError(Exception):
    """Base class for user-facing errors; the CLI prints the message and exits 2."""


class RawDataError(EhftError):
    """A raw GLUE/SuperGLUE file is missing, malformed or holds an unknown label."""

    def __init__(self, path, line, message):
        where = "%s:%d" % (path, line) if line else str(path)
        super().__init__("%s: %s" % (where, message))
        self.path, self.line = path, line


class TokeniserError(EhftError):
    """Tokeniser files are missing or do not match the dictionary."""


class CheckpointError(EhftError):
    """A checkpoint cannot be loaded safely or does not fit the task."""


class ConfigError(EhftError, ValueError):
    """A task or model option out of its range (a ValueError, as fairseq's own are)."""


DEBUG_VARIABLE = "EHFT_DEBUG"


def _fairseq_program():
    """`fairseq-train`, `fairseq-hydra-train`, ... when this process is one of fairseq's
    command lines (torchrun included), else None: a library caller gets the exception."""
    import os
    import sys

    argv0 = sys.argv[0] if sys.argv else ""
    name = os.path.basename(argv0)
    if name.startswith("fairseq-"):
        return name
    if "fairseq_cli" in argv0:  # python -m fairseq_cli.train
        return "fairseq-" + os.path.splitext(name)[0].replace("_", "-")
    return None


def one_line_errors(fn):
    """For the methods fairseq calls (build_model, setup_task, ...): under fairseq's command
    lines a plugin error ends the program as `fairseq-train: error: MESSAGE`, exit status 2,
    as argparse ends a bad flag, with no traceback (set EHFT_DEBUG=1 for one). Under
    fairseq-hydra-train this is the only way: hydra prints a traceback for any exception and
    exits 1, and the plugin is imported only after hydra has started."""
    import functools
    import os
    import sys

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except EhftError as e:
            program = _fairseq_program()
            if program is None or os.environ.get(DEBUG_VARIABLE):
                raise
            print("%s: error: %s" % (program, e), file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    return wrapper
