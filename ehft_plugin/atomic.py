"""Directories and files written all at once: a failure leaves nothing behind, a success
replaces the old one only once the new one is complete."""

import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_dir(out_dir):
    """Yields a temporary directory beside `out_dir`; it becomes `out_dir` when the block
    ends without an error, and is removed when it raises."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % os.path.basename(out_dir), dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result should not be
    try:
        yield tmp
        if os.path.exists(out_dir):
            old = out_dir + ".old-%d" % os.getpid()
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path, suffix=""):
    """Yields a temporary path beside `path` (ending in `suffix`, for writers that choose a
    format by the name); it replaces `path` when the block ends without an error, and is
    removed when it raises: readers never see half a file, a failure leaves the old one."""
    path = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".%s.tmp-" % os.path.basename(path), suffix=suffix,
                               dir=os.path.dirname(path))
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_file(path, text):
    """`text` into `path` through a temporary file: readers never see half a file."""
    with atomic_file(path) as tmp:
        with open(tmp, "w", newline="") as f:
            f.write(text)


def wrap_copy(original):
    """fairseq's PathManager.copy made atomic for local files. fairseq writes a checkpoint
    once (atomically) and copies it to the other names; when a validation is the best so far,
    checkpoint_last.pt is such a copy, made in place: a process killed during it leaves a
    truncated checkpoint_last.pt that no relaunch can load. Copying to a temporary file and
    renaming it leaves either the old file or the new one."""
    def copy(src_path, dst_path, overwrite=False):
        if "://" in str(dst_path):  # remote storage (iopath): as fairseq does it
            return original(src_path, dst_path, overwrite=overwrite)
        tmp = "%s.tmp-copy" % dst_path
        result = original(src_path, tmp, overwrite=True)
        os.replace(tmp, dst_path)
        return result or dst_path
    copy.ehft_wrapped = True  # compat.WRAPPED
    return staticmethod(copy)
