"""tamt.optim.adamw: the fast AdamW implementation must compute torch's reference AdamW update."""
import pytest
import torch

from tamt.optim import adamw


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in [(7, 5), (13,), (3, 4, 2)]]


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
