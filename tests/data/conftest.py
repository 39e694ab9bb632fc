"""Fixtures for the data-layer tests: tokenizers (the real default assets: tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_tok():
    from tamt.models import tiny_tokenizer

    return tiny_tokenizer()
