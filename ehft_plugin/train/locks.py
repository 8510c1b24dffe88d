"""One process at a time on a directory: two `ehft train` (or two grids) writing the same run
would each read and delete the other's files, and record a run neither of them trained."""

import fcntl
import os
from contextlib import contextmanager

from ..errors import EhftError


def acquire(directory, what):
    """Locks `directory` (an advisory lock on the file .NAME.lock beside it) and returns the
    open lock file: closing it releases the lock, and so does the kernel when the holder dies,
    so a killed run never leaves the directory locked. Raises EhftError at once, naming the
    holder, if another process holds it."""
    directory = os.path.abspath(directory)
    parent, name = os.path.split(directory)
    os.makedirs(parent, exist_ok=True)
    path = os.path.join(parent, ".%s.lock" % name)
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise EhftError("%s is in use by another %s (pid %s, lock %s); wait for it to finish "
                        "or stop it" % (directory, what, holder, path)) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


@contextmanager
def exclusive(directory, what):
    """`acquire` for the length of a block."""
    with acquire(directory, what):
        yield
