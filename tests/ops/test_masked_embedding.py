from __future__ import annotations

import pytest
import torch

from tamt import ops


@pytest.mark.parametrize("mode", ["search", "bool", "packed"])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_masked_embedding_matches_float64_oracle(mode, padding_idx):
    torch.manual_seed(3)
    v, h = 37, 13
    ids = torch.randint(0, v, (4, 9))
    ids[0, :3] = 0
    w = torch.randn(v, h, requires_grad=(mode != "search"))
    s = torch.randn(v, h, requires_grad=True)
    tau = ops.topk_threshold(s.detach(), 0.5)
    m = s.detach() > tau
    kwargs = {"search": dict(scores=s, threshold=tau), "bool": dict(mask=m), "packed": dict(mask=ops.pack_mask(m))}[mode]
    out = ops.masked_embedding(ids, w, padding_idx=padding_idx, **kwargs)
    grad = torch.randn_like(out)
    out.backward(grad)

    w_eff = (w.detach().double() * m).requires_grad_()
    ref = torch.nn.functional.embedding(ids, w_eff, padding_idx=padding_idx)
    ref.backward(grad.double())
    torch.testing.assert_close(out.double(), ref.detach(), rtol=0, atol=1e-6)
    if mode == "search":
        torch.testing.assert_close(s.grad.double(), w_eff.grad * w.detach().double(), rtol=1e-6, atol=1e-6)
        assert w.grad is None
    else:
        torch.testing.assert_close(w.grad.double(), w_eff.grad * m, rtol=1e-6, atol=1e-6)
        assert (w.grad[~m] == 0).all()
    if padding_idx is not None:
        g = s.grad if mode == "search" else w.grad
        assert (g[padding_idx] == 0).all()


def test_opcheck_embedding():
    from torch.library import opcheck

    ids = torch.randint(0, 10, (2, 5))
    w = torch.randn(10, 4)
    s = torch.randn(10, 4, requires_grad=True)
    opcheck(torch.ops.tamt.masked_embedding.default, (ids, w, s, torch.tensor(0.0), None, -1))
