"""tamt.io: atomic writes that honour the umask, stale temporaries, output-folder checks, folder locks."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _fs import read_only_folder, tree_digest

from tamt.io import (
    FolderBusyError,
    atomic_path,
    atomic_write_text,
    check_output_dir,
    clean_stale_temporaries,
    file_lock,
    folder_lock,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with open(tmp_path / "plain.txt", "w") as fh:  # what an ordinary write gives
            fh.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    (tmp_path / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "f") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert (tmp_path / "f").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    run = tmp_path / "runs" / "tamt-kd-s0.50"
    run.mkdir(parents=True)
    stale = [run / ".checkpoint.pt.k2x_9abq.tmp", tmp_path / ".result.json.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"")  # SIGKILL during a checkpoint write leaves a 0-byte temporary
    (tmp_path / ".model.qwertyui.tmp").mkdir()  # a half-saved fine-tuned model (tempfile.mkdtemp)
    keep = [run / "checkpoint.pt", tmp_path / "notes.tmp", tmp_path / ".hidden.tmp", tmp_path / ".x.TOOLONG99.tmp"]
    for p in keep:
        p.write_text("mine")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(stale + [tmp_path / ".model.qwertyui.tmp"])
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_output_dir_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(ValueError, match="cannot be created: .* is a file"):
        check_output_dir(tmp_path / "file" / "sub")
    before = tree_digest(tmp_path)
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists() and tree_digest(tmp_path) == before  # creates nothing
    with read_only_folder(tmp_path / "ro") as ro:
        for target in (ro, ro / "run"):
            with pytest.raises(ValueError, match="not writable"):
                check_output_dir(target, what="--out")


_HOLD = """
import os, sys, time
sys.path.insert(0, {repo!r})
from tamt.io import folder_lock
with folder_lock({folder!r}):
    child = 0
    if {fork}:
        child = os.fork()
        if child == 0:  # a child that inherits the locked descriptor and outlives its parent
            time.sleep(60)
            os._exit(0)
    print("locked", child, flush=True)
    time.sleep(60)
"""


def _hold_lock(folder: Path, fork: bool = False) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD.format(repo=str(REPO), folder=str(folder), fork=fork)],
                            stdout=subprocess.PIPE, text=True)
    word, child = proc.stdout.readline().split()
    assert word == "locked"
    return proc, int(child)


def test_folder_lock_refuses_a_second_process_and_survives_its_death(tmp_path):
    run = tmp_path / "run"
    proc, _ = _hold_lock(run)
    try:
        with pytest.raises(FolderBusyError, match=rf"another tamt process \(pid {proc.pid}\) is using .*run"):
            with folder_lock(run):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (run / ".tamt.lock").exists()  # the killed holder could not clean up ...
    with folder_lock(run):  # ... but the kernel dropped its lock: no stale block
        assert (run / ".tamt.lock").read_text().split()[0] == str(os.getpid())
    assert not (run / ".tamt.lock").exists()  # released and removed


def test_a_lock_kept_by_an_orphaned_child_is_broken_by_its_dead_pid(tmp_path):
    """The holder was killed but a forked child still has the locked descriptor: the recorded pid decides."""
    run = tmp_path / "run"
    proc, child = _hold_lock(run, fork=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        t = time.perf_counter()
        with folder_lock(run):
            assert (run / ".tamt.lock").read_text().split()[0] == str(os.getpid())
        assert time.perf_counter() - t < 5
    finally:
        os.kill(child, signal.SIGKILL)


def test_locks_are_reentrant_in_one_process_and_created_folders_vanish_when_unused(tmp_path):
    run = tmp_path / "a" / "run"
    with folder_lock(run):
        with folder_lock(run):  # e.g. a sweep cell writing into the locked sweep folder
            pass
        assert (run / ".tamt.lock").exists()
    assert not run.exists()  # created by the lock and left empty: removed again
    with folder_lock(run):
        (run / "result.json").write_text("{}")
    assert sorted(p.name for p in run.iterdir()) == ["result.json"]


def test_file_lock_blocks_until_released(tmp_path):
    """The asset cache's lock waits (the second process then finds the download done)."""
    path = tmp_path / ".model.lock"
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from tamt.io import file_lock\n"
            f"with file_lock({str(path)!r}):\n    print('locked', flush=True); time.sleep(1.0)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    t = time.perf_counter()
    with file_lock(path):
        waited = time.perf_counter() - t
    proc.wait()
    assert waited > 0.3
