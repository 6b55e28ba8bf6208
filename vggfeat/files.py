"""Writing outputs so that nothing is lost and nothing is half-written.

Every output file (or folder) is written under a temporary name in its own folder, flushed and
fsync'ed, then renamed over the destination; the folder is fsync'ed after the rename. A kill at
any moment leaves the previous output or the new one, never a truncated file. Rename is atomic
on POSIX file systems and on NFS; a folder replaces a folder with one ``renameat2`` exchange on
Linux (elsewhere: two renames, with the old folder kept until the new one is in place).

A disk that fills (``ENOSPC``, a quota, a file-size limit) while writing leaves the previous output
as it was, removes the partial temporary, and raises :class:`~vggfeat.errors.OutputError` naming the
folder and the bytes needed. :func:`check_output` finds the same problems (a folder that cannot be
written, a read-only mount, too little space) before any work.

Temporary names start with ``.`` and end in ``.tmp`` with the writer's pid, so that a later
writer can tell (:func:`remove_stale_tmp`) the leftovers of a dead process from work in progress.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import socket
import uuid
from pathlib import Path

from .errors import OutputError

__all__ = [
    "DISK_FULL",
    "NOT_WRITABLE",
    "atomic_path",
    "atomic_group",
    "check_output",
    "fsync_path",
    "remove_stale_tmp",
    "tmp_name",
    "write_text",
]

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_RENAME_EXCHANGE = 2


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


def tmp_name(path: Path) -> Path:
    """A temporary name beside ``path``: ``.<name>.<pid>-<random>-<host tag>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}-{_host_tag()}.tmp")


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entries: the rename itself)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync a file, or every file and folder under a folder."""
    if path.is_dir():
        for dirpath, _, files in os.walk(path):
            for f in files:
                fsync_path(Path(dirpath) / f)
            fsync_path(Path(dirpath))
    else:
        fsync_path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def os_errno(e: OSError) -> int | None:
    """``e.errno``, also for libraries (pyarrow) that raise an OSError with the message only."""
    if e.errno is not None:
        return e.errno
    text = str(e)
    if "requested and" in text and "written" in text:  # numpy's short write: the disk is full
        return errno.ENOSPC
    for code in (*DISK_FULL, *NOT_WRITABLE):
        if os.strerror(code) in text:
            return code
    return None


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full(folder: Path, need: int | None, written: int = 0) -> OutputError:
    """The one-line error of a write that ran out of space in ``folder``."""
    free = free_bytes(folder)
    need = max(need or 0, written)
    about = f"{need:,} bytes needed" if need else "more space needed"
    return OutputError(
        f"{folder}: no space left for the output ({about}, {free:,} bytes free); the previous "
        "output is unchanged: free some space or choose another output folder"
        if free is not None
        else f"{folder}: no space left for the output ({about}); the previous output is unchanged"
    )


def not_writable(folder: Path, e: OSError) -> OutputError:
    return OutputError(f"{folder}: cannot write here ({os.strerror(e.errno)}); choose another output folder")


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux renameat2); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    return False


def _install(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` over ``path``: a file replaces atomically; a folder is exchanged."""
    if tmp.is_dir() and path.is_dir() and not path.is_symlink():
        if not _exchange(tmp, path):
            old = tmp_name(path)
            os.rename(path, old)
            os.rename(tmp, path)
            tmp = old
        shutil.rmtree(tmp, ignore_errors=True)  # the old folder, now under the temporary name
    else:
        if path.is_dir() and not path.is_symlink():
            raise OutputError(f"{path} is a folder; give a file name (or remove the folder)")
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_group(paths, *, need: int | None = None):
    """Yield one temporary path per destination in ``paths`` (in their folders); once the block
    ends without error, each is fsync'ed and renamed over its destination. The first path is
    the main output; the later ones (sidecars describing it) are removed before it is replaced
    and put in place after it, so a kill between the renames never pairs a new output with an
    old sidecar (it leaves at worst an output without its sidecar, which no reader accepts).
    An error in the block removes the temporaries and leaves every destination as it was; a
    full disk is an :class:`OutputError` naming the folder and ``need`` (bytes)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    for folder in {p.parent for p in paths}:  # what killed writers left, which may fill the disk
        remove_stale_tmp(folder)
    tmps = [tmp_name(p) for p in paths]
    try:
        yield tmps
        for t in tmps:
            fsync_tree(t)
        for p in paths[1:]:
            if p.exists():
                _remove(p)
        for t, p in zip(tmps, paths):
            _install(t, p)
        for folder in {p.parent for p in paths}:
            fsync_path(folder)
    except OSError as e:
        written = sum(_size(t) for t in tmps if t.exists())
        for t in tmps:
            _remove(t)
        if os_errno(e) in DISK_FULL:
            raise disk_full(paths[0].parent, need, written) from None
        if os_errno(e) in NOT_WRITABLE:
            raise not_writable(paths[0].parent, e) from None
        raise
    except BaseException:
        for t in tmps:
            _remove(t)
        raise


@contextlib.contextmanager
def atomic_path(path, *, need: int | None = None):
    """One output (a file, or a folder the block creates at the yielded path), written
    atomically: see :func:`atomic_group`."""
    with atomic_group([path], need=need) as (tmp,):
        yield tmp


def write_text(path, text: str) -> Path:
    """``Path.write_text``, atomically."""
    data = text.encode()
    with atomic_path(path, need=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def check_output(path, *, need: int | None = None, folder_ok: bool = False) -> None:
    """Before any work: ``path`` can be written (its folder exists or can be made, is writable,
    is not a read-only mount), is not a folder (unless ``folder_ok``: an output that is a folder),
    and its file system has ``need`` bytes free where that is known. Raises :class:`OutputError`."""
    path = Path(path)
    if path.is_dir() and not folder_ok:
        raise OutputError(f"{path} is a folder; give a file name (or remove the folder)")
    if path.exists() and not path.is_dir() and folder_ok:
        raise OutputError(f"{path} is a file, not a folder; give a folder name (or remove the file)")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder: {path} cannot be written")
    probe = folder / f".vggfeat-probe.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise not_writable(folder, e) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = free_bytes(folder)
    if need and free is not None and free < need:
        raise OutputError(
            f"{folder}: {free:,} bytes free, the output needs about {need:,}; free some space or "
            "choose another output folder"
        )


def _pid_of(name: str) -> int | None:
    """The writer's pid in a temporary name of :func:`tmp_name`, if it was made on this host."""
    stem = name[: -len(".tmp")] if name.endswith(".tmp") else ""
    parts = stem.rsplit(".", 1)[-1].split("-")
    if len(parts) != 3 or parts[2] != _host_tag() or not parts[0].isdigit():
        return None
    return int(parts[0])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead for our purpose
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def remove_stale_tmp(folder, *, pid_of=_pid_of) -> list[Path]:
    """Remove the temporaries in ``folder`` whose writer (a pid on this host) is gone."""
    removed = []
    folder = Path(folder)
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                continue
            pid = pid_of(entry.name)
            if pid is None or pid == os.getpid() or pid_alive(pid):
                continue
            with contextlib.suppress(OSError):
                _remove(Path(entry.path))
                removed.append(Path(entry.path))
    return removed
