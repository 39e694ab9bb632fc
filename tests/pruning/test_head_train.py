"""The MLM head during TAMT-MLM (frozen on head-less checkpoints by default), the fitted head's cache in
the tamt cache, and search evaluations of the method's own objective."""
from __future__ import annotations

import pytest
import torch

from tamt.pruning import SearchConfig, Searcher
from tamt.pruning.api import make_context
from tamt.pruning.context import fit_head, head_cache_dir, prepare
from tamt.pruning.objectives import mlm_head_parameters

from pruning_helpers import FAST


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TAMT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _head_after_search(model, tok, blocks, **cfg):
    ctx = make_context(model, blocks, SearchConfig(method="tamt-mlm", sparsities=(0.5,), steps=3, **FAST, **cfg),
                       tokenizer=tok)
    s = Searcher(ctx, SearchConfig(method="tamt-mlm", sparsities=(0.5,), steps=3, lr=1e-2, head_lr=1e-2, **FAST,
                                   **cfg), sparsity=0.5)
    before = {n: p.detach().clone() for n, p in mlm_head_parameters(s.model)}
    s.run()
    changed = any(not torch.equal(before[n], p) for n, p in mlm_head_parameters(s.model))
    return ctx, changed


def test_auto_freezes_a_fitted_head_and_trains_a_pretrained_one(tiny, tok, blocks, cache):
    from tamt.models import tiny_model

    ctx, changed = _head_after_search(tiny, tok, blocks)  # no MLM head: tamt fitted one, auto freezes it
    assert ctx.info["head_initialised"] and not changed
    _, changed = _head_after_search(tiny, tok, blocks, head_train="train")  # the paper's co-training, on request
    assert changed
    ctx, changed = _head_after_search(tiny_model("bert", seed=0, with_mlm_head=True), tok, blocks)
    assert not ctx.info["head_initialised"] and changed  # a real head: the paper's co-training
    with pytest.raises(ValueError, match="head_train must be one of"):
        SearchConfig(method="tamt-mlm", head_train="sometimes")


def test_fitted_head_is_cached_in_the_tamt_cache(tiny, tok, blocks, cache):
    a = prepare(tiny, blocks, tokenizer=tok)
    fit_head(a, steps=4, lr=1e-2, batch_size=8, seed=0)
    files = list(head_cache_dir().glob("*.pt"))
    assert len(files) == 1 and str(head_cache_dir()).startswith(str(cache)) and "head_cached" not in a.info
    b = prepare(tiny, blocks, tokenizer=tok)
    fit_head(b, steps=4, lr=1e-2, batch_size=8, seed=0)
    assert b.info["head_cached"] == str(files[0])
    for (n, p), (_, q) in zip(mlm_head_parameters(a.model), mlm_head_parameters(b.model)):
        assert torch.equal(p, q), n
    c = prepare(tiny, blocks, tokenizer=tok)  # other options: another key, fitted anew
    fit_head(c, steps=5, lr=1e-2, batch_size=8, seed=0)
    assert "head_cached" not in c.info and len(list(head_cache_dir().glob("*.pt"))) == 2
    files[0].write_bytes(b"torn")  # a broken cache file is a miss, not an error
    d = prepare(tiny, blocks, tokenizer=tok)
    fit_head(d, steps=4, lr=1e-2, batch_size=8, seed=0)
    assert "head_cached" not in d.info


@pytest.mark.parametrize("method,expect", [("tamt-kd", {"eval_kd_loss"}), ("tamt-mlm", {"eval_mlm_loss"})])
def test_eval_objectives_own_evaluates_the_method_objective_only(tiny, tok, blocks, cache, method, expect):
    cfg = SearchConfig(method=method, sparsities=(0.5,), steps=2, eval_every=1, eval_objectives="own", **FAST)
    rows = []
    s = Searcher(make_context(tiny, blocks, cfg, tokenizer=tok), cfg, sparsity=0.5,
                 callbacks=[lambda srch, ev, p: ev == "eval" and rows.append(p)])
    s.run()
    assert rows and all({k for k in r if k in ("eval_kd_loss", "eval_mlm_loss")} == expect for r in rows)
