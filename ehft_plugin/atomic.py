"""Directories and files written all at once: a failure leaves nothing behind, a success
replaces the old one only once the new one is complete."""

import os
import shutil
import tempfile
from contextlib import contextmanager

from .errors import DiskFullError, disk_full


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


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _no_space_left(directory):
    """Whether the filesystem holding `directory` cannot take another MiB: torch's zip writer
    reports a full disk only as "file write failed", without the OS error."""
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix=".ehft-space-probe-", dir=directory)
        try:
            os.posix_fallocate(fd, 0, 2 ** 20)
        finally:
            os.close(fd)
    except OSError as e:
        return disk_full(e)
    except AttributeError:  # no posix_fallocate on this platform: look at the free space
        return shutil.disk_usage(directory).free < 2 ** 20
    finally:
        if probe:
            _remove(probe)
    return False


def wrap_torch_save(original):
    """fairseq's `_torch_persistent_save(obj, file)`, which tries torch.save three times,
    2.5 s apart, logging each traceback: a write that fails because the disk is full raises
    DiskFullError at once (a retry into the same file cannot succeed)."""
    def torch_save(obj, f):
        import torch

        name = getattr(f, "name", None)
        if not isinstance(name, str):  # a path, or a remote stream: as fairseq does it
            return original(obj, f)
        try:
            return torch.save(obj, f)
        except Exception as e:
            if disk_full(e) or _no_space_left(os.path.dirname(os.path.abspath(name))):
                raise DiskFullError(name) from e
        return original(obj, f)  # another error: fairseq's retries
    return torch_save


def wrap_persistent_save(original):
    """fairseq's `torch_persistent_save(obj, filename)` writes `filename.tmp` and renames it:
    when the disk is full the partial `.tmp` is removed and the error names `filename`."""
    def persistent_save(obj, filename, async_write=False):
        try:
            return original(obj, filename, async_write)
        except DiskFullError as e:
            _remove(filename + ".tmp")
            raise DiskFullError(filename) from e.__cause__
    return persistent_save


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
        try:
            result = original(src_path, tmp, overwrite=True)
        except BaseException as e:
            _remove(tmp)
            if disk_full(e):
                raise DiskFullError(str(dst_path)) from e
            raise
        os.replace(tmp, dst_path)
        return result or dst_path
    copy.ehft_wrapped = True  # compat.WRAPPED
    return staticmethod(copy)
