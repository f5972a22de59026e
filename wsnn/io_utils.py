"""Atomic writes, output permissions, the workdir and directory locks, stale temp clean-up.

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


def _naming(error, path):
    """`error`, or when it names no file (a write on a full disk), the same error naming `path`."""
    return error if error.filename is not None else OSError(error.errno, error.strerror, path)


def write_bytes(path, data):
    """Writes `data` to `path` atomically (temp file + rename).

    Raises:
      OSError: naming `path` when the failing call named no file (ENOSPC).
    """
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
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None:
            raise _naming(e, path) from None
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
    An OSError of the block that names no file (ENOSPC from a write) is
    raised naming `path`.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    tmp = make_temp_dir(parent, "." + os.path.basename(path) + ".tmp-")
    try:
        yield tmp
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.filename is None:
            raise _naming(e, path) from None
        raise
    old = None
    if os.path.lexists(path):
        old = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".old-", dir=parent)
        os.rmdir(old)
        os.rename(path, old)
    os.rename(tmp, path)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def read_json(path, default=None):
    """The JSON document at `path`, or `default` when there is no such file.

    Raises:
      ValueError: the file cannot be read or is not UTF-8 JSON; one line naming it.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def os_error_line(error, path=None):
    """An OSError as "<path>: <reason>": its own file name, else `path`."""
    where = error.filename if error.filename is not None else path
    reason = error.strerror or str(error)
    return f"{os.fsdecode(where)}: {reason}" if where is not None else reason


def remove_stale_temps(directory, prefix="."):
    """Removes what killed writers left in `directory` (names starting with `prefix` and holding
    ".tmp-" or ".old-"); call only while holding the lock its writers hold. Returns the names removed."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if name.startswith(prefix) and any(marker in name for marker in TEMP_MARKERS):
            path = os.path.join(directory, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            removed.append(name)
    return removed


@contextlib.contextmanager
def directory_lock(directory):
    """Holds an exclusive flock on `directory` itself, waiting while another process holds it.

    No lock file is made, so the directory's listing does not change (TF
    Serving reads an export directory's listing). The kernel drops the lock
    when the holder ends, however it ends.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


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
