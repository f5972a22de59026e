"""Atomic writes, output permissions, the workdir lock and stale temp clean-up.

Every output is written under a temporary name in the same directory and then
renamed over the target, which is atomic on POSIX file systems. Temporary
files and directories honour the umask once renamed (files 0644, directories
0755 under umask 022), so that another account (TF Serving) can read them;
`tempfile` alone would leave them 0600 / 0700. A run holds `workdir_lock`
while it writes, so two runs never share a workdir, and `remove_stale_temps`
clears what a killed run left.
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile

TEMP_MARKERS = (".tmp-", ".old-")
LOCK_FILE = ".wsnn.lock"


class WorkdirBusy(RuntimeError):
    """Another process holds the workdir's lock."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def set_umask_mode(path):
    """Gives the file at `path` the permissions a plain new file gets under the umask (mkstemp makes
    0600), before it is renamed into place."""
    os.chmod(path, 0o666 & ~_umask())


def make_temp_dir(parent, prefix):
    """A new temporary directory in `parent` with the umask's permissions (not mkdtemp's 0700)."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def write_bytes(path, data):
    """Writes `data` to `path` atomically (temp file + rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path, text):
    """Writes UTF-8 `text` to `path` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    """Writes `obj` as indented, key-sorted JSON to `path` atomically."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a temporary directory that replaces `path` only if the block succeeds.

    An existing `path` is kept until the new one is complete, then removed.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    tmp = make_temp_dir(parent, "." + os.path.basename(path) + ".tmp-")
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.lexists(path):
        old = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".old-", dir=parent)
        os.rmdir(old)
        os.rename(path, old)
    os.rename(tmp, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temps(directory):
    """Removes what killed writers left in `directory` (names starting with "." and holding
    ".tmp-" or ".old-"); call only while holding the workdir's lock. Returns the names removed."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") and any(marker in name for marker in TEMP_MARKERS):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            removed.append(name)
    return removed


@contextlib.contextmanager
def workdir_lock(workdir):
    """Holds an exclusive lock on `workdir` (its .wsnn.lock file holds the owner's PID).

    The lock is an flock: the kernel drops it when the process ends, however it
    ends, so a killed run never leaves the workdir locked.

    Raises:
      WorkdirBusy: another process holds it; the message names its PID.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise WorkdirBusy(f"{os.path.abspath(workdir)} is in use by another wsnn run (PID {owner}); "
                              "wait for it to end or use another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
