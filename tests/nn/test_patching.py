from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import tamt
from tamt.nn import MaskedEmbedding, MaskedLinear, get_masks, masked_modules, update_thresholds

from ._tiny import FAMILIES, ids, tiny

# per-layer roles (6) x 2 layers + word embeddings (+ pooler where the model has one)
EXPECTED = {"bert": 13, "roberta": 13, "distilbert": 13, "electra": 13}


def out(model, x):
    with torch.no_grad():
        r = model(x)
    return r.logits if hasattr(r, "logits") else r.last_hidden_state


@pytest.mark.parametrize("family", FAMILIES)
def test_patch_at_zero_sparsity_is_identical(family):
    model = tiny(family)
    x = ids()
    before = out(model, x)
    tamt.patch_model(model, 0.0)
    mods = masked_modules(model)
    assert len(mods) == EXPECTED[family]
    roles = {m.role for _, m in mods}
    assert roles == {"query", "key", "value", "attention_output", "intermediate", "output", "word_embeddings"}
    assert torch.equal(out(model, x), before)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["fixed", "search"])
def test_masked_model_equals_hand_masked_dense_model(family, mode):
    # bare encoder: an MLM decoder tied to the embeddings would be masked too in the hand-masked copy
    model = tiny(family, task="base")
    dense = copy.deepcopy(model)
    x = ids(seed=1)
    tamt.patch_model(model, 0.6, mode=mode, init="random", seed=3)
    if mode == "search":
        for _, m in masked_modules(model):  # move scores off the two init levels
            m.scores.data.add_(torch.randn_like(m.scores) * 0.01)
        update_thresholds(model)
    masks = get_masks(model)
    base = dense.base_model
    with torch.no_grad():
        for name, m in masks.items():
            param = base.get_parameter(name)
            param.mul_(m.to(param.dtype))
    torch.testing.assert_close(out(model, x), out(dense, x), rtol=1e-5, atol=1e-5)
    rep = tamt.sparsity_report(model)
    for row in rep.rows:
        assert row["pruned"] == int(0.6 * row["numel"] + 1e-6)


def test_pooler_is_a_target_when_present():
    model = tiny("bert", task="base")
    tamt.patch_model(model, 0.5)
    assert isinstance(model.pooler.dense, MaskedLinear)
    assert len(masked_modules(model)) == 14


def test_search_mode_grads_reach_scores_only():
    model = tiny("bert")
    tamt.patch_model(model, 0.5, mode="search")
    loss = model(ids(), labels=ids()).loss
    loss.backward()
    for name, m in masked_modules(model):
        assert m.scores.grad is not None and m.scores.grad.abs().sum() > 0, name
        assert m.weight.grad is None, name


def test_tied_decoder_stays_tied_to_unmasked_embeddings():
    model = tiny("bert")
    emb_weight = model.bert.embeddings.word_embeddings.weight
    tamt.patch_model(model, 0.5, mode="search")
    assert isinstance(model.bert.embeddings.word_embeddings, MaskedEmbedding)
    assert model.cls.predictions.decoder.weight is emb_weight


def test_omp_init_reproduces_magnitude_mask():
    model = tiny("bert")
    tamt.patch_model(model, 0.7, mode="search", init="omp")
    for _, m in masked_modules(model):
        mag = m.weight.abs()
        k = int(0.7 * mag.numel() + 1e-6)
        want = mag > torch.kthvalue(mag.reshape(-1), k).values
        assert torch.equal(m.current_mask(), want)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_unpatch_save_pretrained_round_trip(tmp_path, family):
    model = tiny(family, task="cls")
    tamt.patch_model(model, 0.5, mode="fixed")
    x = ids(seed=2)
    want = out(model, x)
    tamt.unpatch_model(model)
    assert not masked_modules(model)
    assert not any(isinstance(m, (MaskedLinear, MaskedEmbedding)) for m in model.modules())
    torch.testing.assert_close(out(model, x), want)
    model.save_pretrained(tmp_path)
    from transformers import AutoModelForSequenceClassification

    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(out(loaded, x), want)


def test_to_linear_and_from_linear():
    lin = nn.Linear(6, 4)
    ml = MaskedLinear.from_linear(lin, 0.5, mode="search")
    assert ml.weight is lin.weight
    plain = ml.to_linear()
    x = torch.randn(3, 6)
    torch.testing.assert_close(plain(x), ml(x))
    assert int((plain.weight == 0).sum()) == 12


def test_bad_inputs():
    with pytest.raises(ValueError, match="no TAMT target"):
        tamt.patch_model(nn.Sequential(nn.Linear(3, 3)), 0.5)
    model = tiny("bert")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        tamt.patch_model(model, 1.0)
    with pytest.raises(ValueError, match="unknown target"):
        tamt.patch_model(model, 0.5, targets=["qkv"])
    tamt.patch_model(model, 0.5)
    with pytest.raises(RuntimeError, match="already patched"):
        tamt.patch_model(model, 0.5)
