"""fairseq's --log-file written once per line.

fairseq_cli.train builds a progress bar for every epoch and passes it --log-file; each call of
`fairseq.logging.progress_bar.progress_bar` adds one more FileHandler for that file to the
progress logger, so epoch k writes each of its lines k times and holds k copies of the file
open. On a long budget (the EH-FT authors' 400 CB epochs) train.log grows with the square of
the epochs. The wrapper leaves the file out of every call after the first that named it."""

import inspect
import logging
import os


def has_file_handler(logger, path):
    """Whether `logger` already writes to the file `path` (the handler fairseq adds)."""
    path = os.path.abspath(path)
    return any(isinstance(h, logging.FileHandler) and h.baseFilename == path
               for h in logger.handlers)


def wrap_progress_bar(original, logger):
    """progress_bar(...) that adds no second handler for a --log-file `logger` writes to."""
    signature = inspect.signature(original)

    def progress_bar(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        log_file = bound.arguments.get("log_file")
        if log_file is not None and has_file_handler(logger, log_file):
            bound.arguments["log_file"] = None
        return original(*bound.args, **bound.kwargs)

    return progress_bar
