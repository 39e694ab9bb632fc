"""masked_linear through the public op, every backend, against a float64 oracle."""
from __future__ import annotations

import pytest
import torch

from tamt import ops
from tamt.ops import _backend

SHAPES = [(1, 1, 1), (5, 123, 77), (3, 17, 769), (64, 48, 40)]  # tokens x out x in


def available_backends():
    names = ["torch"]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if _backend.triton_unavailable_reason(dev) is None:
        names.append("triton")
    if _backend.native_unavailable_reason(dev) is None:
        names.append("native")
    return names


def oracle(x, w, b, m, grad):
    """float64: y and the STE gradients (dX, dScores, dW, db) by autograd on W_eff."""
    x64 = x.detach().double().requires_grad_()
    w_eff = (w.detach().double() * m.double()).requires_grad_()
    b64 = None if b is None else b.detach().double().requires_grad_()
    y = torch.nn.functional.linear(x64, w_eff, b64)
    y.backward(grad.double())
    g = w_eff.grad
    return y.detach(), x64.grad, g * w.double(), g * m.double(), None if b is None else b64.grad


def _close(got, want, what, scale):
    err = (got.double() - want).abs().max().item() if want.numel() else 0.0
    tol = 1e-5 * max(1.0, scale)
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("mode", ["search", "bool", "packed"])
def test_masked_linear_matches_float64_oracle(backend, shape, with_bias, mode, device):
    torch.manual_seed(hash((shape, with_bias, mode)) % 2**31)
    t, n, k = shape
    x = torch.randn(t, k, device=device, requires_grad=True)
    w = torch.randn(n, k, device=device, requires_grad=(mode != "search"))
    b = torch.randn(n, device=device, requires_grad=True) if with_bias else None
    s = torch.randn(n, k, device=device, requires_grad=True)
    tau = ops.topk_threshold(s.detach(), 0.6)
    m = s.detach() > tau
    kwargs = {"search": dict(scores=s, threshold=tau), "bool": dict(mask=m), "packed": dict(mask=ops.pack_mask(m))}[mode]
    grad = torch.randn(t, n, device=device)
    with ops.use_backend(backend):
        y = ops.masked_linear(x, w, b, **kwargs)
        y.backward(grad)
    y64, dx64, ds64, dw64, db64 = oracle(x, w, b, m, grad)
    scale = (k ** 0.5) * 4
    _close(y, y64, "y", scale)
    _close(x.grad, dx64, "dX", scale)
    if mode == "search":
        _close(s.grad, ds64, "dScores", t ** 0.5 * 4)
        assert w.grad is None, "frozen weight must get no gradient"
    else:
        _close(w.grad, dw64, "dW", t ** 0.5 * 4)
        assert (w.grad[~m] == 0).all(), "pruned weights must get exactly zero gradient"
        assert s.grad is None
    if with_bias:
        _close(b.grad, db64, "dBias", t ** 0.5 * 4)


@pytest.mark.parametrize("backend", available_backends())
def test_batch_dims_and_only_requested_grads(backend, device):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 16, device=device)  # no grad wanted for x
    w = torch.randn(8, 16, device=device)
    s = torch.randn(8, 16, device=device, requires_grad=True)
    with ops.use_backend(backend):
        y = ops.masked_linear(x, w, scores=s, threshold=0.0)
    assert y.shape == (2, 3, 5, 8)
    ref = torch.nn.functional.linear(x, w * (s.detach() > 0))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert x.grad is None and w.grad is None and s.grad is not None


def test_threshold_float_or_tensor_same():
    torch.manual_seed(1)
    x, w, s = torch.randn(4, 6), torch.randn(3, 6), torch.randn(3, 6)
    a = ops.masked_linear(x, w, scores=s, threshold=0.25)
    b = ops.masked_linear(x, w, scores=s, threshold=torch.tensor(0.25))
    torch.testing.assert_close(a, b)


def test_bad_inputs_raise_clear_errors():
    x, w, s = torch.randn(4, 6), torch.randn(3, 6), torch.randn(3, 6)
    with pytest.raises(ValueError, match="either scores"):
        ops.masked_linear(x, w)
    with pytest.raises(ValueError, match="either scores"):
        ops.masked_linear(x, w, scores=s, threshold=0.0, mask=s > 0)
    with pytest.raises(ValueError, match="threshold"):
        ops.masked_linear(x, w, scores=s)
    with pytest.raises(ValueError, match="another model"):
        ops.masked_linear(x, w, mask=torch.ones(6, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="packed mask has"):
        ops.masked_linear(x, w, mask=torch.zeros(7, dtype=torch.uint8))
    with pytest.raises(ValueError, match="features"):
        ops.masked_linear(torch.randn(4, 5), w, scores=s, threshold=0.0)
    with pytest.raises(ValueError, match="unknown tamt backend"):
        ops.set_backend("cudnn")


def test_opcheck_and_compile():
    from torch.library import opcheck

    torch.manual_seed(2)
    x = torch.randn(5, 7, requires_grad=True)
    w = torch.randn(4, 7)
    b = torch.randn(4, requires_grad=True)
    s = torch.randn(4, 7, requires_grad=True)
    tau = torch.tensor(0.1)
    opcheck(torch.ops.tamt.masked_linear.default, (x, w, b, s, tau, None, None, "torch"))
    opcheck(torch.ops.tamt.masked_linear.default, (x, w.requires_grad_(), b, None, None, s > 0.1, None, "torch"))
    w_eff = torch.where(s.detach() > tau, w.detach(), 0.0)
    opcheck(torch.ops.tamt.masked_linear.default, (x, w.detach(), b, s, tau, None, w_eff, "materialize"))
    w.requires_grad_(False)

    def f(x, s):
        return ops.masked_linear(x, w, b, scores=s, threshold=tau).relu().sum()

    eager = f(x, s)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=False)(x, s)
    torch.testing.assert_close(compiled, eager)


def test_autocast_bf16_cpu():
    x, w, s = torch.randn(4, 8), torch.randn(3, 8), torch.randn(3, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ops.masked_linear(x, w, scores=s, threshold=0.0)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert s.grad is not None and s.grad.dtype == torch.float32
