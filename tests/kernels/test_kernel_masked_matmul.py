"""Fused masked GEMM kernels vs float64 references: forward, input gradient,
STE scores gradient and weight gradient, every mask form, odd shapes."""
from __future__ import annotations

import pytest
import torch

from _kernel_helpers import assert_close_2x, fp32_sum_allowance, mask_kwargs, pack_bits

from tamt import kernels as K

# M x N x K: K % 8 == 0 takes the byte-per-8-columns packed path (K = 40 also
# wraps the grad-input column tiles), the others the per-element bit gather
SHAPES = [(1, 1, 1), (5, 123, 77), (3, 17, 769), (37, 33, 64), (70, 40, 19), (6, 50, 40)]
FORMS = ["scores", "bool", "uint8", "packed"]
ATOL32 = 1e-6


def make(M, N, Kd, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed + 1000 * M + 10 * N + Kd)
    x = torch.randn(M, Kd, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    w = torch.randn(N, Kd, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    b = torch.randn(N, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    s = torch.randn(N, Kd, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    gy = torch.randn(M, N, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    thr = torch.quantile(s.double().reshape(-1).cpu(), 0.4).to(device=device, dtype=dtype)
    return x, w, b, s, gy, thr


def ref64_forward(x, w, b, m):
    y = x.double() @ torch.where(m, w.double(), 0.0).t()
    return y + b.double() if b is not None else y


def torch_forward(x, w, b, m):
    w_eff = w * m.to(w.dtype)
    return torch.nn.functional.linear(x, w_eff, b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_fp32(shape, form, with_bias, device):
    x, w, b, s, _, thr = make(*shape, device=device)
    b = b if with_bias else None
    m = s > thr
    y = K.masked_matmul(x, w, b, **mask_kwargs(form, s, thr))
    assert y.dtype == x.dtype and y.shape == (shape[0], shape[1])
    abs_sum = x.double().abs() @ torch.where(m, w.double(), 0.0).abs().t()  # K = 769: a long sum on a GPU
    assert_close_2x(y, torch_forward(x, w, b, m), ref64_forward(x, w, b, m), ATOL32,
                    allowance=fp32_sum_allowance(abs_sum, shape[2]))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("form", FORMS)
def test_grad_input_fp32(shape, form, device):
    _, w, _, s, gy, thr = make(*shape, device=device)
    m = s > thr
    dx = K.masked_matmul_grad_input(gy, w, **mask_kwargs(form, s, thr))
    ref = gy.double() @ torch.where(m, w.double(), 0.0)
    assert dx.dtype == gy.dtype
    assert_close_2x(dx, gy @ (w * m), ref, ATOL32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("form", FORMS)
def test_grad_weight_fp32(shape, form, device):
    x, w, _, s, gy, thr = make(*shape, device=device)
    m = s > thr
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, **mask_kwargs(form, s, thr), want_scores=True, want_weight=True)
    g64 = gy.double().t() @ x.double()
    g32 = gy.t() @ x
    assert ds.dtype == s.dtype and dw.dtype == w.dtype
    assert_close_2x(ds, g32 * w, g64 * w.double(), ATOL32)
    assert_close_2x(dw, g32 * m, g64 * m, ATOL32)
    # pruned entries of dweight are exactly zero
    assert (dw[~m] == 0).all()


@pytest.mark.parametrize("want", [(True, False), (False, True), (False, False)])
def test_grad_weight_wanted_outputs_only(want, device):
    x, w, _, s, gy, thr = make(5, 123, 77, device=device)
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=thr, want_scores=want[0], want_weight=want[1])
    assert (ds is not None) == want[0] and (dw is not None) == want[1]
    g64 = gy.double().t() @ x.double()
    if ds is not None:
        assert_close_2x(ds, (gy.t() @ x) * w, g64 * w.double(), ATOL32)
    if dw is not None:
        m = s > thr
        assert_close_2x(dw, (gy.t() @ x) * m, g64 * m, ATOL32)


def test_end_to_end_matches_autograd_ste(device):
    """Forward + all gradients vs autograd through the unfused STE in float64."""
    x, w, b, s, gy, thr = make(9, 31, 45, device=device)

    class STE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, scores, t):
            return (scores > t).to(scores.dtype)

        @staticmethod
        def backward(ctx, g):
            return g, None

    x64, w64, b64, s64 = (t.double().requires_grad_() for t in (x, w, b, s))
    y64 = torch.nn.functional.linear(x64, w64 * STE.apply(s64, thr.double()), b64)
    y64.backward(gy.double())

    y = K.masked_matmul(x, w, b, scores=s, threshold=thr)
    dx = K.masked_matmul_grad_input(gy, w, scores=s, threshold=thr)
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=thr, want_scores=True, want_weight=True)
    for out, ref in [(y, y64), (dx, x64.grad), (ds, s64.grad), (dw, w64.grad)]:
        torch.testing.assert_close(out.double(), ref.detach(), rtol=1e-5, atol=1e-5)


def test_explicit_config_path(device):
    """The _config override (used by the GPU sweep test) launches correctly."""
    from tamt.kernels._configs import gemm_configs

    x, w, b, s, gy, thr = make(5, 40, 33, device=device)
    m = s > thr
    cfg = gemm_configs()[0]
    y = K.masked_matmul(x, w, b, scores=s, threshold=thr, _config=cfg)
    assert_close_2x(y, torch_forward(x, w, b, m), ref64_forward(x, w, b, m), ATOL32)
    ds, _ = K.masked_matmul_grad_weight(gy, x, w, mask=m, want_scores=True, want_weight=False, _config=cfg)
    assert_close_2x(ds, (gy.t() @ x) * w, (gy.double().t() @ x.double()) * w.double(), ATOL32)


def test_fp64(device):
    x, w, b, s, gy, thr = make(5, 123, 77, dtype=torch.float64, device=device)
    m = s > thr
    y = K.masked_matmul(x, w, b, scores=s, threshold=thr)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, ref64_forward(x, w, b, m), rtol=1e-12, atol=1e-12)
    dx = K.masked_matmul_grad_input(gy, w, packed_mask=pack_bits(m))
    torch.testing.assert_close(dx, gy @ (w * m), rtol=1e-12, atol=1e-12)
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, mask=m, want_scores=True, want_weight=True)
    torch.testing.assert_close(ds, (gy.t() @ x) * w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dw, (gy.t() @ x) * m, rtol=1e-12, atol=1e-12)


def test_threshold_semantics_strict_and_ties(device):
    """M = scores > threshold (strict): OMP-init scores {0, 2*t0} with ties."""
    x, w, b, _, _, _ = make(4, 20, 24, device=device)
    s = (torch.rand(20, 24, generator=torch.Generator().manual_seed(3)) < 0.5).float().to(device) * 0.02
    for thr_val in [0.0, 0.02, -1.0]:
        thr = torch.tensor(thr_val, device=device)
        m = s > thr
        y = K.masked_matmul(x, w, b, scores=s, threshold=thr)
        assert_close_2x(y, torch_forward(x, w, b, m), ref64_forward(x, w, b, m), ATOL32)
    # a python float threshold works too
    y2 = K.masked_matmul(x, w, b, scores=s, threshold=0.0)
    torch.testing.assert_close(y2, K.masked_matmul(x, w, b, mask=s > 0.0))


def test_threshold_rounded_to_scores_dtype_like_torch(device):
    """bf16 scores with an fp32 threshold between two bf16 values: torch
    rounds the 0-dim threshold to bf16 before comparing; so must the kernel."""
    x, w, _, _, _, _ = make(3, 8, 16, device=device)
    s = torch.full((8, 16), 1.0, dtype=torch.bfloat16, device=device)
    s[::2] = 1.0078125  # next bf16 above 1.0
    thr = torch.tensor(1.001, dtype=torch.float32, device=device)  # rounds to 1.0 in bf16
    m = s > thr
    y = K.masked_matmul(x, w, scores=s, threshold=thr)
    torch.testing.assert_close(y, K.masked_matmul(x, w, mask=m))
    assert_close_2x(y, torch_forward(x, w, None, m), ref64_forward(x, w, None, m), ATOL32)


def test_noncontiguous_inputs(device):
    x, w, b, s, gy, thr = make(6, 10, 14, device=device)
    xt = x.t().contiguous().t()  # same values, column-major strides
    wt = w.t().contiguous().t()
    st = s.t().contiguous().t()
    assert not xt.is_contiguous() and not wt.is_contiguous()
    m = s > thr
    y = K.masked_matmul(xt, wt, b, scores=st, threshold=thr)
    assert_close_2x(y, torch_forward(x, w, b, m), ref64_forward(x, w, b, m), ATOL32)
    dx = K.masked_matmul_grad_input(gy.t().contiguous().t(), wt, mask=m.t().contiguous().t())
    assert_close_2x(dx, gy @ (w * m), gy.double() @ (w.double() * m), ATOL32)


def test_zero_tokens(device):
    _, w, b, s, _, thr = make(1, 7, 5, device=device)
    x = torch.empty(0, 5, device=device)
    gy = torch.empty(0, 7, device=device)
    assert K.masked_matmul(x, w, b, scores=s, threshold=thr).shape == (0, 7)
    assert K.masked_matmul_grad_input(gy, w, scores=s, threshold=thr).shape == (0, 5)
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=thr, want_scores=True, want_weight=True)
    assert ds.shape == dw.shape == (7, 5)
    assert (ds == 0).all() and (dw == 0).all()


def test_reference_functions_agree_with_plain_torch(device):
    x, w, b, s, gy, thr = make(5, 12, 9, device=device)
    m = s > thr
    torch.testing.assert_close(K.masked_matmul_reference(x, w, b, packed_mask=pack_bits(m)), torch_forward(x, w, b, m))
    torch.testing.assert_close(K.masked_matmul_grad_input_reference(gy, w, mask=m), gy @ (w * m))
    ds, dw = K.masked_matmul_grad_weight_reference(gy, x, w, scores=s, threshold=thr, want_scores=True, want_weight=True)
    torch.testing.assert_close(ds, (gy.t() @ x) * w)
    torch.testing.assert_close(dw, (gy.t() @ x) * m)


def test_bad_arguments(device):
    x, w, b, s, _, thr = make(2, 3, 4, device=device)
    with pytest.raises(ValueError):
        K.masked_matmul(x, w, b, scores=s, threshold=thr, mask=s > thr)
    with pytest.raises(ValueError):
        K.masked_matmul(x, w, b)
    with pytest.raises(ValueError):
        K.masked_matmul(x, w, b, packed_mask=torch.zeros(5, dtype=torch.uint8, device=device))
    with pytest.raises(ValueError):
        K.masked_matmul(x, w, b, scores=s)
    with pytest.raises(ValueError):
        K.masked_matmul(x[:, :3], w, b, scores=s, threshold=thr)


# ---------------------------------------------------------------- GPU only
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU-only: bf16/fp16 tl.dot, real TF32 vs IEEE, autotune configs")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "shape,form",
    [(sh, f) for sh in SHAPES for f in FORMS]
    + [(sh, "scores") for sh in [(512, 768, 768), (300, 3072, 768), (257, 768, 3072)]],
)
def test_half_precision_gpu(dtype, shape, form):
    x, w, b, s, gy, thr = make(*shape, dtype=dtype, device="cuda")
    m = s > thr
    kw = mask_kwargs(form, s, thr)
    atol = 1e-3 if dtype == torch.float16 else 1e-2
    y = K.masked_matmul(x, w, b, **kw)
    assert y.dtype == dtype
    assert_close_2x(y, torch_forward(x, w, b, m), ref64_forward(x, w, b, m), atol)
    dx = K.masked_matmul_grad_input(gy, w, **kw)
    assert_close_2x(dx, gy @ (w * m), gy.double() @ (w.double() * m), atol)
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, **kw, want_scores=True, want_weight=True)
    g64 = gy.double().t() @ x.double()
    # unfused PyTorch: dW_eff = grad^T x in dtype, then dS = dW_eff * W in dtype
    g16 = gy.t() @ x
    assert_close_2x(ds, g16 * w, g64 * w.double(), atol)
    assert_close_2x(dw, g16 * m, g64 * m, atol)


@pytest.mark.gpu
@gpu
def test_fp32_gpu_is_ieee_not_tf32():
    x, w, b, s, gy, thr = make(256, 512, 1024, device="cuda")
    m = s > thr
    y = K.masked_matmul(x, w, b, scores=s, threshold=thr)
    ref = ref64_forward(x, w, b, m)
    assert (y.double() - ref).abs().max().item() < 1e-3  # TF32 would give ~1e-2


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype,form", [(torch.bfloat16, "scores"), (torch.bfloat16, "uint8"),
                                        (torch.bfloat16, "packed"), (torch.float32, "scores")])
def test_every_autotune_config_gpu(dtype, form):
    """Every config the pruner keeps for this device, dtype and mask form
    launches (no OutOfResources) and gives correct results on a shape with
    ragged edges in all three dimensions; grad-weight split-K (atomics) for
    every config of the scores form (the search hot path), else the first
    config. About 60 compiles in all."""
    from tamt.kernels import _configs
    from tamt.kernels._common import MASK_DENSE, MASK_PACKED, MASK_SCORES

    x, w, b, s, gy, thr = make(300, 520, 200, dtype=dtype, device="cuda")
    s = s.float()  # fp32 scores with 16-bit weights, as the modules use them
    m = s > thr.float()
    kw = mask_kwargs(form, s, thr.float())
    mode = {"scores": MASK_SCORES, "uint8": MASK_DENSE, "packed": MASK_PACKED}[form]
    limit, cc = _configs.device_limits(torch.cuda.current_device())
    atol = 1e-2 if dtype == torch.bfloat16 else 1e-4
    g64 = gy.double().t() @ x.double()
    for family in ("mm", "gw"):
        for i, cfg in enumerate(_configs.surviving_configs(family, dtype, mode, limit, capability=cc, which="full")):
            if family == "mm":
                y = K.masked_matmul(x, w, b, **kw, _config=cfg)
                assert_close_2x(y, torch_forward(x, w, b, m), ref64_forward(x, w, b, m), atol)
                dx = K.masked_matmul_grad_input(gy, w, **kw, _config=cfg)
                assert_close_2x(dx, gy @ (w * m), gy.double() @ (w.double() * m), atol)
                continue
            if form != "scores" and i > 0:
                continue
            ds, dw = K.masked_matmul_grad_weight(gy, x, w, **kw, want_scores=True, want_weight=True,
                                                 split_k=3, _config=cfg)
            assert_close_2x(ds.float(), ((gy.t() @ x) * w).float(), g64 * w.double(), atol)
            assert_close_2x(dw, (gy.t() @ x) * m, g64 * m, atol)


@pytest.mark.gpu
@gpu
def test_split_k_deterministic_gpu():
    """Deterministic split-K is bitwise reproducible; atomic split-K agrees."""
    x, w, _, s, gy, thr = make(4096, 768, 768, dtype=torch.bfloat16, device="cuda")
    s = s.float()
    runs = [K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=thr.float(), want_scores=True,
                                        want_weight=False, split_k=4, deterministic=True)[0] for _ in range(3)]
    assert all(torch.equal(runs[0], r) for r in runs[1:])
    atomic = K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=thr.float(), want_scores=True,
                                         want_weight=False, split_k=4, deterministic=False)[0]
    torch.testing.assert_close(atomic, runs[0], rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- split-K
@pytest.mark.parametrize("shape", [(37, 33, 64), (70, 40, 19), (100, 9, 24)])
@pytest.mark.parametrize("form", ["scores", "uint8", "packed"])
@pytest.mark.parametrize("split,deterministic", [(2, False), (3, True), (5, False)])
def test_grad_weight_split_k(shape, form, split, deterministic, device):
    """Split-K over tokens (atomics or the deterministic two-pass sum) gives
    the same STE products, incl. splits that end up empty."""
    x, w, _, s, gy, thr = make(*shape, device=device)
    m = s > thr
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, **mask_kwargs(form, s, thr), want_scores=True, want_weight=True,
                                         split_k=split, deterministic=deterministic)
    g64 = gy.double().t() @ x.double()
    g32 = gy.t() @ x
    assert_close_2x(ds, g32 * w, g64 * w.double(), ATOL32)
    assert_close_2x(dw, g32 * m, g64 * m, ATOL32)
    assert (dw[~m] == 0).all()


def test_grad_weight_split_k_fp64_and_16bit_outputs(device):
    """fp64 partials stay fp64; the deterministic pass is bitwise repeatable."""
    x, w, _, s, gy, thr = make(70, 24, 40, dtype=torch.float64, device=device)
    m = s > thr
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=thr, want_scores=True, want_weight=True,
                                         split_k=3, deterministic=True)
    g = gy.t() @ x
    torch.testing.assert_close(ds, g * w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dw, g * m, rtol=1e-12, atol=1e-12)
    again = K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=thr, want_scores=True, want_weight=False,
                                        split_k=3, deterministic=True)[0]
    assert torch.equal(again, ds)


def test_choose_split_fills_the_machine():
    from tamt.kernels.masked_matmul_grad_weight import choose_split

    # BERT-base on 132 SMs: 36 and 144 tiles of 128 x 128 -> split so that one wave is ~full
    assert choose_split(8192, 768, 768, 132) == 3
    assert choose_split(8192, 3072, 768, 132) in (3, 4)
    # enough tiles already, or too few tokens to split, or no GPU: no split
    assert choose_split(8192, 30522, 768, 132) == 1
    assert choose_split(300, 768, 768, 132) == 1
    assert choose_split(8192, 768, 768, 1) == 1
    for m in (512, 4096, 65536):
        s = choose_split(m, 768, 768, 132)
        assert 1 <= s <= 16 and m // s >= 256
