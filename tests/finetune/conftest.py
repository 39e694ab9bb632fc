from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
    import fixtures as fx

    d = tmp_path_factory.mktemp("glue")
    fx.write_sst2(d)
    fx.write_stsb(d)
    fx.write_mnli(d)
    fx.write_cola(d)
    fx.write_squad(d)
    return d


@pytest.fixture(scope="session")
def tiny():
    from tamt.models import tiny_model, tiny_tokenizer

    return tiny_model("bert", 0), tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny):
    d = tmp_path_factory.mktemp("tinybert")
    model, tok = tiny
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def omp_mask(tiny):
    import copy

    from tamt.nn import get_masks, patch_model

    m = copy.deepcopy(tiny[0])
    patch_model(m, 0.5)  # fixed mode at s > 0: the OMP mask
    return get_masks(m)
