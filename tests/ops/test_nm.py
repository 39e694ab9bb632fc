"""The N:M mask op and N:M search mode of masked_linear: selection rule, ties, float64 gradients, backends."""
from __future__ import annotations

import pytest
import torch

from tamt import ops
from tamt.ops import nm as nmops
from tamt.ops.nm import is_nm, nm_indicator, nm_mask, parse_nm

PATTERNS = [(2, 4), (1, 4), (4, 8)]


def _oracle(scores, n, m):
    """Independent oracle: per group, sort (value desc, position asc) in Python and keep the first n."""
    rows = scores.reshape(-1, m).tolist()
    keep = torch.zeros(len(rows), m, dtype=torch.bool)
    for r, vals in enumerate(rows):
        for j in sorted(range(m), key=lambda i: (-vals[i], i))[:n]:
            keep[r, j] = True
    return keep.view(scores.shape)


@pytest.mark.parametrize("n,m", PATTERNS)
def test_nm_mask_keeps_the_n_largest_per_group_with_deterministic_ties(n, m):
    g = torch.Generator().manual_seed(n * 10 + m)
    for shape in [(3, m), (7, 5 * m), (1, 3 * m)]:
        # small integer scores: plenty of ties inside groups
        s = torch.randint(0, 3, shape, generator=g).float()
        keep = nm_mask(s, n, m)
        assert keep.dtype == torch.bool and keep.shape == s.shape
        assert torch.equal(keep, _oracle(s, n, m)), shape
        assert is_nm(keep, n, m)
        r = torch.randn(shape, generator=g, dtype=torch.float64)
        assert torch.equal(nm_mask(r, n, m), _oracle(r, n, m))
    # all tied: the first n of every group
    z = torch.zeros(2, 2 * m)
    expect = torch.zeros(2, 2, m, dtype=torch.bool)
    expect[..., :n] = True
    assert torch.equal(nm_mask(z, n, m), expect.view(2, 2 * m))


def test_nm_mask_half_precision_and_validation():
    s = torch.randn(4, 16)
    assert torch.equal(nm_mask(s.bfloat16(), 2, 4), _oracle(s.bfloat16().float(), 2, 4))
    with pytest.raises(ValueError, match="not divisible by M=4"):
        nm_mask(torch.randn(3, 10), 2, 4)
    with pytest.raises(ValueError, match="1 <= N < M"):
        nm_mask(s, 4, 4)
    assert parse_nm("2:4") == (2, 4) and parse_nm(" 4 : 8 ") == (4, 8) and parse_nm((1, 4)) == (1, 4)
    assert parse_nm("unstructured") is None and parse_nm(None) is None and parse_nm("N:M") == (2, 4)
    for bad in ("3:2", "2:4:8", "half", "0:4"):
        with pytest.raises(ValueError):
            parse_nm(bad)
    assert not is_nm(torch.ones(2, 8, dtype=torch.bool), 2, 4)
    assert nmops.nm_violations(torch.ones(2, 8, dtype=torch.bool), 2, 4)[:2] == (4, 4)


def test_random_and_magnitude_nm_masks():
    g = torch.Generator().manual_seed(0)
    r = nmops.random_nm_mask((64, 32), 2, 4, generator=g)
    assert is_nm(r, 2, 4)
    # uniform over positions: each of the 4 slots kept ~half the time
    frac = r.view(64, 8, 4).float().mean((0, 1))
    assert ((frac - 0.5).abs() < 0.12).all(), frac
    w = torch.randn(8, 16)
    assert torch.equal(nmops.magnitude_nm_mask(w, 2, 4), _oracle(w.abs(), 2, 4))


def _ref_linear(x, w, b, keep):
    """float64 oracle: y = x (W*M)^T + b; STE grads: dS = (dY^T X) * W; dW = (dY^T X) * M."""
    xd, wd = x.double(), w.double()
    y = xd @ torch.where(keep, wd, 0.0).t()
    return y + b.double() if b is not None else y


def _backends():
    from tamt.ops import _backend

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return ["torch"] + (["triton"] if _backend.triton_unavailable_reason(dev) is None else [])


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("shape,nm", [((5, 7, 12), (2, 4)), ((2, 9, 13, 24), (1, 4)), ((33, 17, 40), (4, 8))])
def test_masked_linear_nm_search_matches_float64_reference(backend, shape, nm, device):
    """float64 on CPU (the Triton interpreter included); float32 on a GPU, against the same float64 oracle."""
    *lead, out, k = shape
    g = torch.Generator().manual_seed(sum(shape))
    dt = torch.float64 if device.type == "cpu" else torch.float32
    tol = dict(rtol=1e-12, atol=1e-12) if dt == torch.float64 else dict(rtol=1e-4, atol=1e-4)

    def new(*size, ints=False):
        t = torch.randint(0, 4, size, generator=g).double() if ints else torch.randn(*size, generator=g, dtype=dt)
        return t.to(device=device, dtype=dt).requires_grad_(True)

    x, w, b = new(*lead, k), new(out, k), new(out)
    s = new(out, k, ints=True)  # small integers: ties inside groups
    with ops.use_backend(backend):
        y = ops.masked_linear(x, w, b, scores=s, nm=nm)
    keep = _oracle(s.detach().cpu(), *nm).to(device)
    xd, wd = x.detach().double(), w.detach().double()
    ref = _ref_linear(xd, wd, b.detach().double(), keep)
    torch.testing.assert_close(y.double(), ref, **tol)
    gy = torch.randn(y.shape, generator=g, dtype=torch.float64).to(device)
    y.backward(gy.to(dt))
    G = gy.reshape(-1, out).t() @ xd.reshape(-1, k)
    torch.testing.assert_close(s.grad.double(), G * wd, **tol)
    torch.testing.assert_close(w.grad.double(), torch.where(keep, G, 0.0), **tol)
    torch.testing.assert_close(x.grad.double(), gy @ torch.where(keep, wd, 0.0), **tol)
    torch.testing.assert_close(b.grad.double(), gy.reshape(-1, out).sum(0), **tol)


def test_masked_linear_nm_fp32_equals_the_fixed_mask_path():
    x, w, s = torch.randn(6, 16), torch.randn(5, 16), torch.randn(5, 16)
    y = ops.masked_linear(x, w, scores=s, nm=(2, 4))
    assert torch.equal(y, ops.masked_linear(x, w, mask=nm_mask(s, 2, 4)))


def test_masked_linear_nm_argument_errors():
    x, w, s = torch.randn(2, 8), torch.randn(3, 8), torch.randn(3, 8)
    with pytest.raises(ValueError, match="no threshold"):
        ops.masked_linear(x, w, scores=s, threshold=0.0, nm=(2, 4))
    with pytest.raises(ValueError, match="give scores"):
        ops.masked_linear(x, w, mask=s > 0, nm=(2, 4))
    with pytest.raises(ValueError, match="not divisible"):
        ops.masked_linear(torch.randn(2, 6), torch.randn(3, 6), scores=torch.randn(3, 6), nm=(2, 4))
    with pytest.raises(TypeError, match="pair"):
        ops.masked_linear(x, w, scores=s, nm=2)


def test_nm_indicator_is_a_straight_through_estimator():
    s = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    ind = nm_indicator(s, 2, 4)
    assert torch.equal(ind > 0, nm_mask(s, 2, 4)) and set(ind.unique().tolist()) == {-1.0, 1.0}
    g = torch.randn(4, 8, dtype=torch.float64)
    ind.backward(g)
    assert torch.equal(s.grad, g)


def test_opcheck_nm_argument():
    from torch.library import opcheck

    x, w, b = torch.randn(3, 8), torch.randn(4, 8), torch.randn(4)
    s = torch.randn(4, 8, requires_grad=True)
    opcheck(torch.ops.tamt.masked_linear.default, (x, w, b, s, None, None, None, "torch", [2, 4]))
    g = torch.randn(3, 4)
    opcheck(torch.ops.tamt.masked_linear_grad_input.default, (g, w, s.detach(), None, None, None, "torch", [2, 4]))
