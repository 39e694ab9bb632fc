"""Every search method on a tiny random BERT: exact sparsity, frozen weights, IMP rounds, gradient flow."""
from __future__ import annotations

import math

import pytest
import torch

import tamt
from tamt.nn import base_model, masked_modules
from tamt.pruning import SearchConfig, Searcher, prepare
from tamt.pruning.strategies import imp_levels

from pruning_helpers import FAST


def _ctx(tiny, tok, blocks):
    return prepare(tiny, blocks, tokenizer=tok)


def _check_exact(masks, s):
    assert masks
    for name, m in masks.items():
        n = m.numel()
        assert m.dtype == torch.bool
        assert n - int(m.sum()) == math.floor(s * n), name


@pytest.mark.parametrize("method", ["random", "omp", "tamt-mlm", "tamt-kd", "tamt-mlm-kd"])
def test_exact_per_matrix_sparsity(method, tiny, tok, blocks):
    res = tamt.search(tiny, method, [0.5, 0.7], blocks, steps=6, tokenizer=tok, **FAST)
    assert set(res.masks) == {0.5, 0.7}
    for s in (0.5, 0.7):
        _check_exact(res.masks[s], s)
    names = set(res.masks[0.5])
    # every TAMT target of BERT: 6 per layer x 2 layers + pooler + word embeddings
    assert len(names) == 14
    assert "pooler.dense.weight" in names and "embeddings.word_embeddings.weight" in names


def test_omp_is_l1_unstructured(tiny, tok, blocks):
    from torch.nn.utils import prune

    res = tamt.search(tiny, "omp", 0.6, blocks, tokenizer=tok, **FAST)
    for name, mask in res.masks.items():
        w = tiny.get_parameter(name).detach()
        lin = torch.nn.Linear(1, 1)
        lin.weight = torch.nn.Parameter(w.clone())
        prune.l1_unstructured(lin, "weight", amount=math.floor(0.6 * w.numel()))
        assert torch.equal(lin.weight_mask.bool(), mask), name


def test_random_is_seeded(tiny, tok, blocks):
    a = tamt.search(tiny, "random", 0.5, blocks, tokenizer=tok, seed=1, **FAST).masks
    b = tamt.search(tiny, "random", 0.5, blocks, tokenizer=tok, seed=1, **FAST).masks
    c = tamt.search(tiny, "random", 0.5, blocks, tokenizer=tok, seed=2, **FAST).masks
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("method", ["tamt-mlm", "tamt-kd", "tamt-mlm-kd"])
def test_tamt_leaves_weights_untouched_and_moves_the_mask(method, tiny, tok, blocks):
    ctx = _ctx(tiny, tok, blocks)
    before = {k: v.clone() for k, v in base_model(ctx.model).state_dict().items()}
    cfg = SearchConfig(method=method, sparsities=(0.5,), steps=15, lr=5e-2, **FAST)
    s = Searcher(ctx, cfg, sparsity=0.5)
    omp = {f"{n}.weight": m.current_mask().clone() for n, m in masked_modules(s.model)}
    s.run()
    after = base_model(s.model)
    for name, m in masked_modules(s.model):
        assert torch.equal(m.weight, before[f"{name}.weight"]), name  # frozen weights
        assert not m.weight.requires_grad
    for k, v in after.state_dict().items():
        if k in before and not k.endswith((".scores", ".threshold", ".mask")):
            assert torch.equal(v, before[k]), k  # biases, LayerNorm, position embeddings too
    final = s.masks[0.5]
    _check_exact(final, 0.5)
    changed = sum(int((final[k] != omp[k]).sum()) for k in final)
    assert changed > 0, "the scores never crossed the threshold: the mask did not move from OMP"
    assert torch.isfinite(torch.tensor([r["loss"] for r in s.history if "loss" in r])).all()


def test_scores_change_only_where_gradients_flow(tiny, tok, blocks):
    ctx = _ctx(tiny, tok, blocks)
    cfg = SearchConfig(method="tamt-mlm", sparsities=(0.5,), steps=3, lr=1e-2, **FAST)
    s = Searcher(ctx, cfg, sparsity=0.5)
    mods = dict(masked_modules(s.model))
    start = {n: m.scores.detach().clone() for n, m in mods.items()}
    seen = set()
    for _ in range(3):
        s.step()
        seen |= set(s.last_batch["masked_ids"].flatten().tolist())
    # the pooler is not on the MLM path: no gradient, no change
    assert torch.equal(mods["pooler.dense"].scores, start["pooler.dense"])
    # embedding rows of tokens never fed in get no gradient; rows fed in do
    emb = mods["embeddings.word_embeddings"]
    unseen = sorted(set(range(emb.weight.shape[0])) - seen)
    assert unseen and sorted(seen)
    assert torch.equal(emb.scores[unseen], start["embeddings.word_embeddings"][unseen])
    assert not torch.equal(emb.scores[sorted(seen)], start["embeddings.word_embeddings"][sorted(seen)])
    # encoder matrices all receive gradient
    for n in mods:
        if "encoder" in n:
            assert not torch.equal(mods[n].scores, start[n]), n


def test_kd_scores_change_only_where_gradients_flow(tiny, tok, blocks):
    ctx = _ctx(tiny, tok, blocks)
    cfg = SearchConfig(method="tamt-kd", sparsities=(0.5,), steps=2, lr=1e-2, weight_decay=0.0, **FAST)
    s = Searcher(ctx, cfg, sparsity=0.5)
    pool = dict(masked_modules(s.model))["pooler.dense"]
    start = pool.scores.detach().clone()
    s.run()
    assert torch.equal(pool.scores, start)


def test_imp_prunes_ten_percent_per_round_and_rewinds(tiny, tok, blocks):
    assert imp_levels([0.7], 0.1) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    ctx = _ctx(tiny, tok, blocks)
    pre = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    cfg = SearchConfig(method="imp", sparsities=(0.5, 0.7), imp_interval=2, lr=1e-2, **FAST)
    events = []
    s = Searcher(ctx, cfg, callbacks=[lambda srch, ev, p: events.append((ev, p))])
    assert s.total_steps == 2 * 6  # 7 rounds, the first at step 0
    s.run()
    rounds = [p for ev, p in events if ev == "mask"]
    assert [r["step"] for r in rounds] == [0, 2, 4, 6, 8, 10, 12]
    levels = sorted(s.masks)
    assert levels == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    prev = None
    for lvl in levels:
        _check_exact(s.masks[lvl], lvl)
        if prev is not None:  # pruning happens among the survivors only
            for k in prev:
                assert not (s.masks[lvl][k] & ~prev[k]).any(), k
        prev = s.masks[lvl]
    # the masks after round 1 follow the trained (not the pre-trained) magnitudes: not OMP
    omp = tamt.search(tiny, "omp", 0.7, blocks, tokenizer=tok, **FAST).masks
    assert any(not torch.equal(omp[k], s.masks[0.7][k]) for k in omp)
    # rewound: every weight is back at its pre-trained value
    for k, v in s.model.state_dict().items():
        if k in pre:
            assert torch.equal(v, pre[k]), k


def test_imp_resets_optimizer_each_round(tiny, tok, blocks):
    ctx = _ctx(tiny, tok, blocks)
    cfg = SearchConfig(method="imp", sparsities=(0.3,), imp_interval=3, lr=1e-2, **FAST)
    s = Searcher(ctx, cfg)
    seen = []
    s.callbacks.append(lambda srch, ev, p: ev == "step" and seen.append((srch.scheduler.last_epoch,
                                                                         len(srch.optimizer.state))))
    s.run()
    # schedule counter restarts at the prune of step 3 (round 2), optimizer state is emptied;
    # the last round (step 6) ends the search, so nothing is reset there
    assert [x[0] for x in seen] == [1, 2, 0, 1, 2, 3]
    assert seen[2][1] == 0 and seen[0][1] > 0


def test_paper_threshold_mode(tiny, tok, blocks):
    ctx = _ctx(tiny, tok, blocks)
    cfg = SearchConfig(method="tamt-mlm", sparsities=(0.5,), steps=8, lr=5e-2, threshold_mode="paper",
                       reset_interval=4, dropout=False, **FAST)
    s = Searcher(ctx, cfg, sparsity=0.5)
    mods = [m for _, m in masked_modules(s.model)]
    taus, drift = [], []
    for _ in range(8):
        s.step()
        taus.append([float(m.threshold) for m in mods])
        drift.append(max(abs(1 - float(m.current_mask().float().mean()) - 0.5) for m in mods))
    assert taus[0] == taus[1] == taus[2]  # fixed between resets
    assert taus[3] != taus[2]  # reset at step 4
    assert max(drift[4:7]) > 0.001  # the sparsity drifts in paper mode between resets ...
    assert drift[3] < 0.001 and drift[7] < 0.001
    s.finish()
    _check_exact(s.masks[0.5], 0.5)  # ... and the saved mask is exact (tau reset at every save)


def test_epochs_and_steps(tiny, tok, blocks):
    ctx = _ctx(tiny, tok, blocks)
    s = Searcher(ctx, SearchConfig(method="tamt-kd", sparsities=(0.5,), epochs=1.0, **FAST), sparsity=0.5)
    assert s.total_steps == len(blocks["train"]) // FAST["batch_size"]
    assert Searcher(ctx, SearchConfig(method="omp", sparsities=(0.5,), **FAST), sparsity=0.5).total_steps == 0


def test_omp_rank_init_starts_at_the_omp_mask_and_moves(tiny, tok, blocks):
    """score_init='omp-rank': step 0 is exactly OMP; training then changes the mask (KD objective)."""
    omp = tamt.search(tiny, "omp", 0.5, blocks, tokenizer=tok, **FAST).masks
    res = tamt.search(tiny, "tamt-kd", 0.5, blocks, tokenizer=tok, steps=1, save_masks_at=(0,), score_init="omp-rank",
                      **FAST)  # (steps=0 is refused: it would label the starting mask as a TAMT result)
    start = res.saved_at[0.5][0]["masks"]
    assert all(torch.equal(start[k], omp[k]) for k in omp)
    moved = tamt.search(tiny, "tamt-kd", 0.5, blocks, tokenizer=tok, steps=8, lr=3e-3, score_init="omp-rank",
                        **FAST).masks
    _check_exact(moved, 0.5)
    assert any(not torch.equal(moved[k], omp[k]) for k in omp)
