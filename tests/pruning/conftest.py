from __future__ import annotations

import random

import pytest
import torch


from pruning_helpers import WORDS, make_blocks  # noqa: E402


@pytest.fixture(scope="session")
def tok():
    from tamt.models import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="session")
def blocks(tok):
    return make_blocks(tok)


@pytest.fixture(scope="session")
def tiny():
    from tamt.models import tiny_model

    return tiny_model("bert", seed=0)


@pytest.fixture(scope="session")
def tiny_mlm():
    from tamt.models import tiny_model

    return tiny_model("bert", seed=0, with_mlm_head=True)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny, tok):
    """The tiny BERT + tokenizer saved as a checkpoint folder (for the CLI)."""
    d = tmp_path_factory.mktemp("tiny_bert")
    tiny.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    rng = random.Random(1)
    p = d / "corpus.txt"
    p.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(60)) for _ in range(300)) + "\n")
    return p


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)

