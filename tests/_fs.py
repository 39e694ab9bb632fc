"""File-system helpers of the reliability tests: folder digests, read-only folders."""
from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``root`` (folders appear through their files)."""
    root = Path(root)
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder nobody can create files in: mode 0555, or for root (who ignores modes) the immutable flag."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    r = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"running as root without chattr +i ({r.stderr.decode().strip()}): no read-only folder")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=False)
