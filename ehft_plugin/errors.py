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
