"""ScoreAdamW (the native fused score step) computes torch.optim.AdamW, and the top-k it feeds stays exact."""
from __future__ import annotations

import copy

import pytest
import torch

from tamt import _native, ops
from tamt.pruning.score_step import ScoreAdamW, make_score_optimizer

needs_native = pytest.mark.skipif(not _native.available(), reason=f"native backend: {_native.unavailable_reason()}")
SHAPES = [(37, 41), (256, 129), (5000,), (7, 3)]


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = [torch.nn.Parameter(torch.randn(s, generator=g) * 0.02) for s in SHAPES]
    head = torch.nn.Parameter(torch.randn(13, generator=g))
    return scores, head


def _groups(scores, head):
    return [{"params": scores, "name": "scores", "weight_decay": 0.01},
            {"params": [head], "name": "mlm_head", "weight_decay": 0.0}]


def _grads(g, scores, head, step):
    for i, p in enumerate(scores):
        # matrix 3 has no gradient in the first steps (like the pooler under KD): skipped, as torch does
        p.grad = None if (i == 3 and step < 3) else torch.randn(p.shape, generator=g)
    head.grad = torch.randn(head.shape, generator=g)


@needs_native
def test_score_adamw_matches_torch_adamw_and_shares_its_state_dict():
    ref_s, ref_h = _params()
    mine_s, mine_h = _params()
    hp = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    ref = torch.optim.AdamW(_groups(ref_s, ref_h), foreach=False, **hp)
    mine = ScoreAdamW(_groups(mine_s, mine_h), fused=True, **hp)
    sched = torch.optim.lr_scheduler.LambdaLR(mine, lambda i: 1.0 - i / 10)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref, lambda i: 1.0 - i / 10)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for step in range(6):
        _grads(g1, ref_s, ref_h, step)
        _grads(g2, mine_s, mine_h, step)
        ref.step()
        mine.step()
        ref_sched.step()
        sched.step()
    assert mine.native_steps == 6
    for a, b in zip(mine_s + [mine_h], ref_s + [ref_h]):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
        sa, sb = mine.state[a], ref.state[b]
        assert float(sa["step"]) == float(sb["step"])
        torch.testing.assert_close(sa["exp_avg"], sb["exp_avg"], rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-5, atol=1e-12)
    assert float(mine.state[mine_s[3]]["step"]) == 3  # skipped while it had no gradient
    # the checkpoint format is torch's: continue with torch.optim.AdamW from ScoreAdamW's state
    cont_s, cont_h = _params()
    with torch.no_grad():
        for c, m in zip(cont_s + [cont_h], mine_s + [mine_h]):
            c.copy_(m)
    cont = torch.optim.AdamW(_groups(cont_s, cont_h), foreach=False, **hp)
    cont.load_state_dict(copy.deepcopy(mine.state_dict()))  # as saved and loaded (no shared buffers)
    g3, g4 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    _grads(g3, cont_s, cont_h, 9)
    _grads(g4, mine_s, mine_h, 9)
    cont.step()
    mine.step()
    for a, b in zip(mine_s, cont_s):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)


def test_unsupported_settings_and_groups_take_torch_step():
    scores, head = _params()
    opt = ScoreAdamW(_groups(scores, head), lr=1e-2, amsgrad=True)
    _grads(torch.Generator().manual_seed(0), scores, head, 5)
    opt.step()
    assert opt.native_steps == 0 and "max_exp_avg_sq" in opt.state[scores[0]]
    # IMP trains weights (no 'scores' group): plain fused AdamW
    assert type(make_score_optimizer([{"params": [head], "name": "weights"}], lr=1e-3)) is torch.optim.AdamW


@needs_native
def test_thresholds_reuse_the_step_histogram_and_stay_exact(monkeypatch):
    scores, head = _params(3)
    opt = make_score_optimizer(_groups(scores, head), lr=1e-2)
    assert isinstance(opt, ScoreAdamW)
    calls = []
    select = _native.segmented_kth_smallest

    def spy(flats, ks, **kw):
        calls.append(kw.get("first_hist") is not None)
        return select(flats, ks, **kw)

    monkeypatch.setattr(_native, "segmented_kth_smallest", spy)
    g = torch.Generator().manual_seed(4)

    def exact():
        want = torch.stack([torch.kthvalue(p.detach().reshape(-1), int(0.6 * p.numel())).values for p in scores])
        assert torch.equal(ops.topk_thresholds(scores, 0.6), want)

    _grads(g, scores, head, 0)  # matrix 3 has no gradient: its histogram is computed once, then reused
    opt.step()
    exact()
    assert calls[-1] is True
    _grads(g, scores, head, 5)
    opt.step()
    exact()
    assert calls[-1] is True
    with torch.no_grad():
        scores[1].mul_(-1.0)  # changed since the step: its histogram is stale, the full select runs
    exact()
    assert calls[-1] is False
    assert {id(p) for p in scores} <= opt.verified_finite  # finite after the step: the NaN guard may skip them
    _grads(g, scores, head, 5)
    scores[2].grad[7] = float("nan")
    scores[0].grad[3] = float("inf")
    opt.step()
    assert id(scores[2]) not in opt.verified_finite and id(scores[0]) not in opt.verified_finite
    assert id(scores[1]) in opt.verified_finite
    with pytest.raises(ValueError, match="NaN"):
        ops.topk_thresholds(scores, 0.6)


@needs_native
def test_select_counts_entries_at_or_below_the_threshold():
    g = torch.Generator().manual_seed(6)
    ties = torch.randint(0, 5, (3000,), generator=g).float()  # heavy ties at every threshold
    scores = [torch.randn(1000, generator=g), ties, torch.full((64,), 0.5), torch.randn(50, generator=g),
              torch.randn(777, generator=g).double()]
    ks = [500, 1700, 10, 0, 1]
    for hist in (None, torch.stack([_native.key_histogram_reference(t.float(), 11) for t in scores[:4]])):
        s, k = (scores, ks) if hist is None else (scores[:4], ks[:4])
        taus, counts = _native.segmented_kth_smallest_count_le(s, k, first_hist=hist)
        for t, kk, tau, c in zip(s, k, taus, counts.tolist()):
            if kk == 0:
                assert c == -1 and tau == float("-inf")
            else:
                assert tau == torch.kthvalue(t.reshape(-1), kk).values
                assert c == int((t <= tau).sum())


@needs_native
def test_exact_thresholds_break_ties_with_the_select_count():
    from tamt.nn import MaskedLinear
    from tamt.pruning.score_step import exact_thresholds

    model = torch.nn.Sequential(MaskedLinear(40, 30), MaskedLinear(30, 20))
    for m in model:
        m.start_search(0.5, init=torch.randint(0, 3, m.weight.shape).float())  # three levels: ties at tau
    exact_thresholds(model)
    for m in model:
        n = m.weight.numel()
        assert int((m.scores > m.threshold).sum()) == n - n // 2  # exactly floor(s*n) pruned
