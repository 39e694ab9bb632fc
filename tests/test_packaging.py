"""The package layout stays installable: every package folder is listed in pyproject."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "tamt").rglob("__init__.py")}
    found.add("tamt.kernels")
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"


def test_import_tamt_is_light():
    code = (
        "import sys, tamt; heavy = [m for m in ('transformers', 'datasets', 'triton', 'matplotlib', 'sklearn') "
        "if m in sys.modules]; print(heavy); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
