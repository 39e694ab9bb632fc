"""N:M search methods and the one-shot baselines (Wanda, magnitude per row) on a tiny random BERT."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import tamt
from tamt.nn import masked_modules, patch_model
from tamt.nn.scores import keep_largest
from tamt.ops.nm import is_nm, magnitude_nm_mask, nm_mask
from tamt.pruning import Searcher, build_config, prepare
from tamt.pruning.one_shot import rowwise_keep

from pruning_helpers import FAST

EMB = "embeddings.word_embeddings.weight"


def _linear_names(masks):
    return [k for k in masks if k != EMB]


@pytest.mark.parametrize("method", ["omp", "random", "magnitude-row", "wanda", "tamt-kd", "tamt-mlm"])
def test_every_method_finds_valid_2_4_masks(method, tiny, tok, blocks, tmp_path):
    res = tamt.search(tiny, method, None, blocks, steps=3, tokenizer=tok, structure="2:4", out=tmp_path,
                      calibration_blocks=16, **FAST)
    masks = res.masks
    assert len(masks) == 14 and res.sparsities == (0.5,)
    for name in _linear_names(masks):
        assert is_nm(masks[name], 2, 4), name
    emb = masks[EMB]  # unstructured at the same sparsity, exactly floor(s*n) pruned
    assert emb.numel() - int(emb.sum()) == math.floor(0.5 * emb.numel())
    path = res.paths[0.5]
    assert path.endswith(f"{method}-2of4_s0.50.safetensors")
    mf = tamt.load_mask(path)
    assert mf.structures == {n: "2:4" for n in _linear_names(masks)}
    assert tamt.sparsity_report(mf).groups_valid is True
    if method in ("omp", "random"):  # analysis compares N:M masks with OMP-N:M, not unstructured OMP
        from tamt.analysis import distance_from_omp

        d = distance_from_omp(tiny, path)
        lin = [d["matrices"][n]["distance"] for n in _linear_names(masks)]
        assert (max(lin) == 0.0) if method == "omp" else (min(lin) > 0.0), lin


def test_tamt_2_4_starts_at_omp_2_4_and_moves_away_from_it(tiny, tok, blocks):
    ctx = prepare(tiny, blocks, tokenizer=tok)
    omp = {n: m for n, m in tamt.search(tiny, "omp", 0.5, blocks, tokenizer=tok, structure="2:4",
                                        context=ctx, **FAST).masks.items()}
    from tamt.nn import get_masks

    start = get_masks(Searcher(ctx, build_config("tamt-kd", 0.5, steps=1, structure="2:4", score_init="omp", **FAST),
                               sparsity=0.5).model)  # the masks before the first step
    for name in _linear_names(omp):
        w = ctx.model.base_model.get_parameter(name)
        assert torch.equal(omp[name], magnitude_nm_mask(w, 2, 4)), name
        assert torch.equal(start[name], omp[name]), name
    moved = tamt.search(tiny, "tamt-kd", 0.5, blocks, steps=6, tokenizer=tok, structure="2:4", context=ctx,
                        lr=0.05, **FAST).masks
    changed = sum(int((moved[n] != omp[n]).sum()) for n in _linear_names(omp))
    assert changed > 0, "the 2:4 search never changed a group"
    assert all(is_nm(moved[n], 2, 4) for n in _linear_names(moved))


def test_magnitude_row_and_omp(tiny, tok, blocks):
    ctx = prepare(tiny, blocks, tokenizer=tok)
    row = tamt.search(tiny, "magnitude-row", 0.7, blocks, tokenizer=tok, context=ctx, **FAST).masks
    omp = tamt.search(tiny, "omp", 0.7, blocks, tokenizer=tok, context=ctx, **FAST).masks
    for name, keep in row.items():
        w = ctx.model.base_model.get_parameter(name).detach().abs()
        assert keep.numel() - int(keep.sum()) == math.floor(0.7 * keep.numel()), name
        per_row = (~keep).sum(1)
        assert int(per_row.max() - per_row.min()) <= 1, name  # every row prunes floor(s*in) or one more
        # within each row, every kept |W| >= every pruned |W|
        lo = torch.where(keep, w, torch.full_like(w, float("inf"))).min(1).values
        hi = torch.where(~keep, w, torch.full_like(w, -1.0)).max(1).values
        assert (lo >= hi).all(), name
        assert torch.equal(omp[name], keep_largest(w, 0.7))
    # with 2:4 both are "the 2 largest |W| of every group" on the Linears (a group lies in one row)
    r24 = tamt.search(tiny, "magnitude-row", None, blocks, tokenizer=tok, context=ctx, structure="2:4", **FAST).masks
    o24 = tamt.search(tiny, "omp", None, blocks, tokenizer=tok, context=ctx, structure="2:4", **FAST).masks
    assert all(torch.equal(r24[n], o24[n]) for n in _linear_names(o24))


def test_rowwise_keep_exact_total_and_stable_ties():
    m = torch.tensor([[1.0, 1.0, 1.0], [0.0, 5.0, 5.0]])
    keep = rowwise_keep(m, 0.5)  # k = 3: one per row, the third from the row with the smaller next candidate
    assert int((~keep).sum()) == 3
    assert torch.equal(keep, torch.tensor([[False, True, True], [False, False, True]])) or \
        torch.equal(keep, torch.tensor([[False, False, True], [False, True, True]]))
    assert not keep[0, 0] and not keep[1, 0]  # ties: the earlier column goes first


def test_wanda_weighs_magnitude_by_input_norms(tiny, tok, blocks):
    from tamt.nn import base_model
    from tamt.pruning.wanda import calibration_indices, wanda_masks

    ctx = prepare(tiny, blocks, tokenizer=tok)
    model = copy.deepcopy(ctx.model)
    patch_model(model, structure="2:4")
    masks = wanda_masks(model, ctx, 0.5, blocks=12, batch_size=5, seed=4)
    assert all(is_nm(masks[n], 2, 4) for n in _linear_names(masks))
    assert torch.equal(masks[EMB], keep_largest(ctx.model.base_model.get_parameter(EMB).abs(), 0.5))
    # layer 0's query by hand: its input norms on the calibration blocks, embeddings pruned by magnitude
    ref = copy.deepcopy(ctx.model)
    patch_model(ref, 0.0)
    ref.get_input_embeddings().set_mask(masks[EMB])
    q = base_model(ref).encoder.layer[0].attention.self.query
    sq = torch.zeros(q.in_features)
    state = {}
    def hook(mod, args):
        sq.add_((args[0] * state["am"].unsqueeze(-1)).pow(2).sum((0, 1)))

    h = q.register_forward_pre_hook(hook)
    idx = calibration_indices(len(ctx.train), 12, 4)
    with torch.no_grad():
        for i in range(0, len(idx), 5):
            b = ctx.batch("train", idx[i:i + 5])
            state["am"] = b["attention_mask"].float()
            base_model(ref)(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    h.remove()
    name = "encoder.layer.0.attention.self.query.weight"
    metric = q.weight.detach().abs() * sq.sqrt()
    assert torch.equal(masks[name], nm_mask(metric, 2, 4))
    assert not torch.equal(masks[name], magnitude_nm_mask(q.weight, 2, 4))  # the activations matter
    # unstructured: per output row on |W| * ||X||; different calibration seeds give different samples
    m0 = tamt.search(tiny, "wanda", 0.5, blocks, tokenizer=tok, context=ctx, seed=0, calibration_blocks=8, **FAST)
    m1 = tamt.search(tiny, "wanda", 0.5, blocks, tokenizer=tok, context=ctx, seed=1, calibration_blocks=8, **FAST)
    for n, keep in m0.masks.items():
        assert keep.numel() - int(keep.sum()) == math.floor(0.5 * keep.numel()), n
    assert any(not torch.equal(m0.masks[n], m1.masks[n]) for n in _linear_names(m0.masks))


def test_structure_config_errors_and_resume_guard(tiny, tok, blocks):
    with pytest.raises(ValueError, match="imp prunes 10 %"):
        build_config("imp", None, structure="2:4")
    with pytest.raises(ValueError, match="contradicts"):
        build_config("omp", 0.7, structure="2:4")
    with pytest.raises(ValueError, match="give a sparsity"):
        build_config("omp", None)
    cfg = build_config("omp", None, structure="1:4")
    assert cfg.sparsities == (0.75,) and cfg.structure == "1:4" and cfg.embedding_structure == "unstructured"
    ctx = prepare(tiny, blocks, tokenizer=tok)
    a = Searcher(ctx, build_config("tamt-kd", 0.5, steps=2, structure="2:4", **FAST), sparsity=0.5)
    b = Searcher(ctx, build_config("tamt-kd", 0.5, steps=2, **FAST), sparsity=0.5)
    with pytest.raises(ValueError, match="structure 2:4, not unstructured"):
        b.load_state_dict(a.state_dict())
    assert any(m.nm == (2, 4) for _, m in masked_modules(a.model))
