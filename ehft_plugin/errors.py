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


class DiskFullError(EhftError, OSError):
    """A file could not be written for want of space; what was half written is removed."""

    def __init__(self, path):
        import errno
        import os
        import shutil

        directory = os.path.dirname(os.path.abspath(path))
        try:
            free = "%.1f MiB free there" % (shutil.disk_usage(directory).free / 2 ** 20)
        except OSError:
            free = "free space unknown"
        super().__init__(errno.ENOSPC, "%s: no space left on device (%s); the partial file "
                         "was removed and what was saved before is intact: free space and run "
                         "the same command again" % (path, free))
        self.filename = path

    def __str__(self):
        return self.strerror


def disk_full(error):
    """Whether `error` (or what caused it) is a write refused for want of space or quota."""
    import errno

    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def describe(error):
    """The one line a user-caused error ends a command with, or None for a bug (whose
    traceback is wanted): the plugin's errors, and a disk found full while writing."""
    if isinstance(error, EhftError):
        return str(error)
    if disk_full(error):
        where = getattr(error, "filename", None)
        return "%sno space left on device" % ("%s: " % where if where else "")
    return None


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
    """Under fairseq's command lines an error `describe` knows ends the program as
    `fairseq-train: error: MESSAGE`, exit status 2, as argparse ends a bad flag, with no
    traceback (set EHFT_DEBUG=1 for one); a library caller gets the exception. Wraps
    fairseq's `call_main` (compat.py), which every fairseq command line runs its work in, so
    errors raised inside fairseq's own code (a checkpoint refused by --restore-file, a full
    disk while saving) end the same way; and the methods fairseq calls before that
    (setup_task, build_model, ...), for fairseq-hydra-train, where hydra would print a
    traceback for any exception and exit 1."""
    import functools
    import os
    import sys

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            line = describe(e)
            program = _fairseq_program()
            if line is None or program is None or os.environ.get(DEBUG_VARIABLE):
                raise
            print("%s: error: %s" % (program, line), file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    return wrapper
