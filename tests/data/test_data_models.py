"""Encoder loading (local folders, MLM head detection and tying, errors) and the tiny test models."""
from __future__ import annotations

import json

import pytest
import torch

from tamt.models import TINY_FAMILIES, TINY_VOCAB_SIZE, load_encoder, load_tokenizer, tiny_model, tiny_tokenizer


def _inputs(tok, family):
    enc = tok(["hello world", "the movie was good"], padding=True, return_tensors="pt")
    if family in ("roberta", "distilbert"):
        enc.pop("token_type_ids")
    return enc


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_tiny_model_families(family, tiny_tok):
    state = torch.random.get_rng_state()
    base = tiny_model(family, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert not base.training and base.config.vocab_size == TINY_VOCAB_SIZE
    again, other = tiny_model(family, seed=3), tiny_model(family, seed=4)
    p0 = next(iter(base.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(base.get_input_embeddings().weight, other.get_input_embeddings().weight)
    assert p0 is not None
    out = base(**_inputs(tiny_tok, family)).last_hidden_state
    assert out.shape[-1] == 32 and sum(p.numel() for p in base.parameters()) < 100_000
    mlm = tiny_model(family, seed=3, with_mlm_head=True)
    assert mlm.get_output_embeddings().weight is mlm.get_input_embeddings().weight
    assert mlm(**_inputs(tiny_tok, family)).logits.shape[-1] == TINY_VOCAB_SIZE


def test_tiny_tokenizer(tiny_tok):
    ids = tiny_tok("Hello, the world!")["input_ids"]
    assert ids[0] == tiny_tok.cls_token_id == 2 and ids[-1] == tiny_tok.sep_token_id == 3
    assert tiny_tok.pad_token_id == 0 and tiny_tok.mask_token_id == 4 and tiny_tok.unk_token_id == 1
    assert len(tiny_tok) == TINY_VOCAB_SIZE and tiny_tok.is_fast
    assert tiny_tokenizer()("hello")["input_ids"] == tiny_tok("hello")["input_ids"]


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_head_initialised_when_checkpoint_has_none(family, tmp_path, tiny_tok):
    tiny_model(family, seed=0).save_pretrained(tmp_path / "enc")
    model, info = load_encoder(tmp_path / "enc", with_mlm_head=True, output_info=True)
    assert info.head_initialised and info.decoder_tied and info["head_initialised"]
    assert info.family == family and not info.encoder_missing_keys
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert model.tamt_load_info is info
    # the encoder weights are the saved ones
    saved = tiny_model(family, seed=0).get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight, saved)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_head_kept_when_checkpoint_has_one(family, tmp_path):
    src = tiny_model(family, seed=1, with_mlm_head=True)
    src.save_pretrained(tmp_path / "mlm")
    model, info = load_encoder(str(tmp_path / "mlm"), with_mlm_head=True, output_info=True)
    assert not info.head_initialised and info.decoder_tied
    for (k, a), b in zip(src.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), k
    base, binfo = load_encoder(tmp_path / "mlm", output_info=True)
    assert not binfo.head_initialised and binfo.decoder_tied is None


def test_dtype(tmp_path):
    tiny_model("bert").save_pretrained(tmp_path / "enc")
    m = load_encoder(tmp_path / "enc", dtype=torch.bfloat16)
    assert m.get_input_embeddings().weight.dtype == torch.bfloat16


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_encoder(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        load_encoder("./no/such/dir")
    with pytest.raises(ValueError, match="no config.json"):
        load_encoder(tmp_path)
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="not a supported BERT-family"):
        load_encoder(tmp_path / "gpt")
    with pytest.raises(OSError, match="hub"):
        load_encoder("some-org/not-a-local-model")  # the suite runs with HF_HUB_OFFLINE=1


def test_load_tokenizer_local(tmp_path, tiny_tok):
    tiny_tok.save_pretrained(tmp_path / "tok")
    tiny_model("bert").config.save_pretrained(tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    assert tok("hello world")["input_ids"] == tiny_tok("hello world")["input_ids"]
