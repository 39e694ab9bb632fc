"""Files and folders a run writes: atomic writes, output-folder checks, folder locks.

* :func:`atomic_path` / :func:`atomic_write_text` - nothing a user produced is
  lost to a crash mid-write (write a temporary file, then rename it).
* :func:`clean_stale_temporaries` - the temporaries a SIGKILL mid-write leaves.
* :func:`check_output_dir` - an ``--out`` that is a file or not writable is
  refused before any work starts.
* :func:`file_lock` / :func:`folder_lock` - one process at a time per file or
  run folder (the asset cache waits; a run folder refuses with the holder's pid).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
import threading
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def honour_umask(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Give a file made by ``tempfile`` (always 0600 / 0700) the mode a plain ``open`` would have had."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path in the target's folder; on success rename it over ``path``.

    The rename is atomic on POSIX, so readers see the old file or the complete
    new one, never a torn write.  On error the temporary file is removed; a
    process killed mid-write leaves ``.<name>.XXXXXXXX.tmp``, which
    :func:`clean_stale_temporaries` removes on the next start.  The file gets
    the usual ``0666 & ~umask`` mode (``mkstemp`` creates it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        honour_umask(tmp)  # after the write: some writers (safetensors) recreate the file 0600
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


# mkstemp/mkdtemp names: prefix + 8 characters of [a-z0-9_] + suffix
_STALE_TMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the ``.<name>.XXXXXXXX.tmp`` files and folders left under ``folder`` by killed writers.

    Call it only while holding the folder's lock (:func:`folder_lock`): a live
    writer's temporary looks the same.  Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in sorted(folder.rglob(".*.tmp")):
        if _STALE_TMP.match(p.name):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse an output folder that is a file or cannot be written, before any work starts.

    Creates nothing: a missing folder is checked through its nearest existing
    parent (the run creates it later).
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{what} {p} is a file, not a folder; pass a folder (it is created when missing)")
    probe = p
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{what} {p} cannot be created: {probe} is a file; pass a folder path")
    try:  # os.access misses read-only mounts and immutable folders; a real file does not
        fd, name = tempfile.mkstemp(prefix=".tamt-write-test.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        where = "" if probe == p else f" (its nearest existing parent {probe})"
        raise ValueError(f"{what} {p} is not writable{where}: {exc.strerror}; choose a folder you can write to") \
            from None
    return p


# ---------------------------------------------------------------------------
# locks


class FolderBusyError(RuntimeError):
    """Another process holds the lock of a run folder."""


# (thread, lock file) -> nesting depth: re-entrant within one thread; other threads wait or are refused like
# other processes (an flock belongs to its open file description, so two opens conflict even in one process)
_HELD: dict[tuple[int, str], int] = {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_owner(path: Path) -> tuple[int | None, str | None]:
    try:
        text = path.read_text().split()
        return int(text[0]), (text[1] if len(text) > 1 else None)
    except (OSError, ValueError, IndexError):
        return None, None


def _flock(fd: int, blocking: bool) -> bool:
    """True when the lock was taken; False when another holder has it (non-blocking)."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


def _acquire(path: Path, *, blocking: bool, what: str | None) -> int | None:
    """Lock ``path``; returns the descriptor (None where flock is unavailable)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows: the atomic renames alone protect the files
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        try:
            taken = _flock(fd, blocking)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP):  # a filesystem without flock: say so, go on
                import logging

                logging.getLogger(__name__).warning("cannot lock %s (%s); make sure no other tamt process uses "
                                                    "it", path, exc.strerror)
                return None
            raise
        if not taken:
            os.close(fd)
            pid, owner_host = _read_owner(path)
            if pid is not None and owner_host == host and pid != os.getpid() and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):  # stale: its owner is gone, break it
                    os.unlink(path)
                continue
            who = f"pid {pid}" + ("" if owner_host in (None, host) else f" on {owner_host}") if pid else "pid unknown"
            raise FolderBusyError(f"another tamt process ({who}) is using {what or path}; wait for it to finish "
                                  "or use another folder")
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {host}\n".encode())
            return fd
        os.close(fd)  # the holder deleted the file while we waited: lock the new one


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, blocking: bool = True, what: str | None = None, remove: bool = False):
    """Exclusive advisory lock on ``path`` (POSIX ``flock``), holding this process' pid and host.

    ``blocking=True`` waits for the holder (the asset cache: the second process
    then finds the download done).  ``blocking=False`` raises
    :class:`FolderBusyError` naming the holder's pid and ``what``.  The kernel
    drops an ``flock`` when its process dies, so a killed holder never blocks;
    a lock still held although its recorded pid is gone (a forked child kept
    the descriptor) is broken.  ``remove=True`` deletes the file on release
    (the inode is re-checked after locking, so a racing process never holds a
    deleted file's lock).  Re-entrant within one thread.
    """
    path = Path(path)
    key = (threading.get_ident(), os.path.realpath(path))
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    fd = _acquire(path, blocking=blocking, what=what)
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        if fd is not None:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            os.close(fd)  # closing drops the flock


LOCK_NAME = ".tamt.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str | None = None):
    """Hold ``folder/.tamt.lock`` for the duration; refuse when another process has it.

    A folder created here is removed again when the run leaves it empty (it failed before writing).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(folder / LOCK_NAME, blocking=False, what=what or str(folder), remove=True):
            yield folder
    finally:
        if created:  # a run that failed before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
