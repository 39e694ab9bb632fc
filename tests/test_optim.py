"""tamt.optim.adamw: the fast AdamW implementation must compute torch's reference AdamW update."""
import pytest
import torch

from tamt.optim import adamw


def _params(seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(scale * torch.randn(shape, generator=g)) for shape in [(7, 5), (13,), (3, 4, 2)]]


def _run(opt_factory, steps=5):
    ps = _params()
    opt = opt_factory(ps)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return ps, opt


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adamw_matches_the_reference_loop(wd):
    fast, opt = _run(lambda ps: adamw([{"params": ps[:2], "weight_decay": wd}, {"params": ps[2:]}], lr=1e-2,
                                      weight_decay=wd))
    ref, _ = _run(lambda ps: torch.optim.AdamW([{"params": ps[:2], "weight_decay": wd}, {"params": ps[2:]}],
                                               lr=1e-2, weight_decay=wd, foreach=False))
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    start = _params()
    assert all(not torch.equal(a.detach(), s.detach()) for a, s in zip(fast, start))  # the steps did move them


def test_adamw_picks_fused_on_cpu_and_respects_explicit_choice():
    ps = _params()
    assert adamw(ps, lr=1e-3).defaults["fused"] is True  # CPU has fused kernels in every supported torch
    assert adamw(ps, lr=1e-3, foreach=False).defaults.get("fused") in (None, False)
    assert adamw(ps + [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], lr=1e-3).defaults["fused"] is True


# ---------------------------------------------------------------------------
# the reference code's optimizers (--preset paper)

SCORE_SCALE = 0.02  # parameters at the scale of TAMT's scores (0 / 2*t0), so float32 storage resolves 1e-7


def _grads(steps, seed=1):
    """Per step, one gradient per parameter of _params(); tensor 0 gets a large norm (clipped), 1 a small one."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        gs = [torch.randn(p.shape, generator=g) for p in _params()]
        gs[0] = gs[0] * 5.0
        gs[1] = gs[1] * 1e-3
        out.append(gs)
    return out


def _hand_bert_adam(steps, lrs, wds, eps=1e-6, clip=1.0):
    """BertAdam (mask_training/transformer/optimization.py) written out with float64 state."""
    ps = [p.detach().double() for p in _params(scale=SCORE_SCALE)]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    for t, gs in enumerate(_grads(steps)):
        for i, (p, g) in enumerate(zip(ps, gs)):
            g = g.double()
            norm = float(g.float().norm())
            if clip / (norm + 1e-6) < 1:
                g = g * (clip / (norm + 1e-6))
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            update = m[i] / (v[i].sqrt() + eps) + wds[i] * p
            ps[i] = p - lrs[t] * update
    return ps


def test_bert_adam_matches_a_hand_written_update():
    from tamt.optim import BertAdam

    steps, lr = 6, 1e-2
    lrs = [lr * (1 - t / steps) for t in range(steps)]  # warmup_linear with warm-up 0, t_total = steps
    ps = _params(scale=SCORE_SCALE)
    opt = BertAdam([{"params": ps[:2], "weight_decay": 0.01}, {"params": ps[2:], "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (steps - i) / steps)
    for gs in _grads(steps):
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
        sched.step()
    ref = _hand_bert_adam(steps, lrs, [0.01, 0.01, 0.0])
    for a, b in zip(ps, ref):
        assert (a.detach().double() - b).abs().max() < 1e-7
    # no bias correction: the first step moves each entry by about lr * (1 - b1) / sqrt(1 - b2) = 3.16 lr
    p = torch.nn.Parameter(torch.zeros(100))
    p.grad = torch.full((100,), 0.05)  # norm 0.5: not clipped; |g| >> eps
    BertAdam([p], lr=1e-3, weight_decay=0.0).step()
    assert torch.allclose(p.detach(), torch.full((100,), -1e-3 * 0.1 / 0.001 ** 0.5), rtol=1e-3)


def test_bert_adam_clips_each_tensor_on_its_own():
    from tamt.optim import BertAdam

    a, b = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(4))
    a.grad, b.grad = torch.full((4,), 100.0), torch.full((4,), 0.1)  # a's norm 200 (clipped), b's 0.2 (kept)
    BertAdam([a, b], lr=1.0, weight_decay=0.0).step()
    torch.testing.assert_close(a.grad, torch.full((4,), 100.0 / (200 + 1e-6)))  # clipped in place, as the reference
    torch.testing.assert_close(b.grad, torch.full((4,), 0.1))  # a global clip would have scaled b by 1/200 too


def test_hf_adamw_matches_a_hand_written_update_and_differs_from_torch_at_small_gradients():
    from tamt.optim import AdamWHF

    steps, lr, wd = 5, 1e-2, 0.01
    ps = _params(scale=SCORE_SCALE)
    opt = AdamWHF([{"params": ps, "weight_decay": wd}], lr=lr)
    for gs in _grads(steps):
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
    ref = [p.detach().double() for p in _params(scale=SCORE_SCALE)]
    m = [torch.zeros_like(p) for p in ref]
    v = [torch.zeros_like(p) for p in ref]
    for t, gs in enumerate(_grads(steps), start=1):
        for i, g in enumerate(gs):
            g = g.double()
            m[i] = 0.9 * m[i] + 0.1 * g
            v[i] = 0.999 * v[i] + 0.001 * g * g
            ref[i] = ref[i] - lr * (1 - 0.999 ** t) ** 0.5 / (1 - 0.9 ** t) * m[i] / (v[i].sqrt() + 1e-8)
            ref[i] = ref[i] - lr * wd * ref[i]  # decay after the step
    for a, b in zip(ps, ref):
        assert (a.detach().double() - b).abs().max() < 1e-7
    # eps enters before the bias correction: with |g| ~ eps the first step is smaller than torch's
    x, y = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))
    x.grad, y.grad = torch.full((3,), 1e-8), torch.full((3,), 1e-8)
    AdamWHF([x], lr=1.0).step()
    torch.optim.AdamW([y], lr=1.0, weight_decay=0.0).step()
    assert float(x.detach()[0]) == pytest.approx(-1e-8 / (1e-8 + 1e-8 / 0.001 ** 0.5), rel=1e-4)
    assert float(y.detach()[0]) == pytest.approx(-0.5, rel=1e-4)


def test_make_optimizer():
    from tamt.optim import AdamWHF, BertAdam, clips_per_tensor, make_optimizer

    ps = _params()
    assert isinstance(make_optimizer("bert-adam", ps, lr=1e-3, max_grad_norm=1.0), BertAdam)
    assert make_optimizer("bert-adam", ps, lr=1e-3).defaults["eps"] == 1e-6
    assert isinstance(make_optimizer("adamw-hf", ps, lr=1e-3), AdamWHF)
    assert isinstance(make_optimizer("adamw", ps, lr=1e-3), torch.optim.AdamW)
    assert clips_per_tensor("bert-adam") and not clips_per_tensor("adamw")
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("sgd", ps, lr=1e-3)
