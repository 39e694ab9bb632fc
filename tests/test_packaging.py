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


def test_kernel_sources_are_linked_not_a_top_level_package():
    """kernels/ (design card) is not a regular package: a top-level ``kernels`` with an __init__.py
    shadowed Hugging Face's ``kernels`` for everything run from the repository root (transformers
    >= 5.25 imports it). tamt/kernels/ links each source there, relative, so wheels and IDEs see files."""
    assert not (REPO / "kernels" / "__init__.py").exists()
    sources = {p.name for p in (REPO / "kernels").glob("*.py")}
    pkg = REPO / "tamt" / "kernels"
    links = {p.name for p in pkg.glob("*.py") if p.name != "__init__.py"}
    assert sources and sources == links, f"link each kernels/*.py into tamt/kernels/: {sorted(sources ^ links)}"
    for name in links:
        link = pkg / name
        assert link.is_symlink() and not Path(link.readlink()).is_absolute(), f"{link} must be a relative symlink"
        assert link.resolve() == (REPO / "kernels" / name).resolve()
    assert (pkg / "__init__.py").is_file() and not (pkg / "__init__.py").is_symlink()


def test_top_level_kernels_is_never_the_repository_folder():
    """From the repository root (``python -m pytest``/``python -c`` put it first on sys.path),
    ``import kernels`` is Hugging Face's package when it is installed, and transformers' hub-kernels
    integration imports; without it, at most an empty namespace, never a module with code."""
    code = r"""
import importlib.util, json, sys
try:
    import importlib.metadata as md; installed = md.version("kernels")
except Exception:
    installed = None
spec = importlib.util.find_spec("kernels")
out = {"installed": installed, "origin": spec.origin if spec else None,
       "locations": list(spec.submodule_search_locations or []) if spec else []}
if installed:
    import transformers.integrations.hub_kernels  # raised ImportError (CUDAProperties) when shadowed
    import kernels
    out["file"] = kernels.__file__
print(json.dumps(out))
"""
    import json

    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ours = str((REPO / "kernels").resolve())
    if out["installed"]:
        assert out["file"] and not str(Path(out["file"]).resolve()).startswith(ours), out
    else:  # a PEP 420 namespace portion at most: no __init__.py, nothing executes
        assert out["origin"] in (None, "namespace") or not str(out["origin"]).startswith(ours), out


def test_wheel_ships_the_kernel_sources_as_files(tmp_path):
    """The wheel holds tamt/kernels/<module>.py with the sources' bytes (the symlinks followed)."""
    import zipfile

    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No module named" in r.stderr and "setuptools" in r.stderr:
        import pytest

        pytest.skip("setuptools is not installed in this environment")
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = tmp_path.glob("tamt-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for src in (REPO / "kernels").glob("*.py"):
            assert z.read(f"tamt/kernels/{src.name}") == src.read_bytes()
    assert "tamt/kernels/__init__.py" in names and not any(n.startswith("kernels/") for n in names)
