"""N:M mask mode of the fused GEMMs (group top-N chosen from the scores inside the W-tile load)
vs float64 references: forward, input gradient, STE scores gradient, weight gradient; odd shapes,
ties, fp32 and fp64 (interpreter), 2:4 / 1:4 / 4:8, and on a GPU bf16/fp16 plus every autotune config."""
from __future__ import annotations

import pytest
import torch

from _kernel_helpers import assert_close_2x

from tamt import kernels as K
from tamt.kernels._common import nm_mask_reference

# M x N x K: K a multiple of the group size but (mostly) not of the interpreter's BLOCK 32; odd M, N
SHAPES = [(1, 1, 8), (5, 7, 12), (37, 33, 40), (70, 19, 72), (3, 65, 136)]
PATTERNS = [(2, 4), (1, 4), (4, 8)]


def make(M, N, Kd, dtype, device, seed=0, ties=True):
    g = torch.Generator().manual_seed(seed + 1000 * M + 10 * N + Kd)
    x = torch.randn(M, Kd, generator=g, dtype=torch.float64)
    w = torch.randn(N, Kd, generator=g, dtype=torch.float64)
    b = torch.randn(N, generator=g, dtype=torch.float64)
    gy = torch.randn(M, N, generator=g, dtype=torch.float64)
    s = torch.randn(N, Kd, generator=g, dtype=torch.float64)
    if ties:  # a third of the scores tied at a few levels: exercises the position tie-break
        tie = torch.rand(N, Kd, generator=g) < 0.33
        s[tie] = torch.randint(0, 2, (int(tie.sum()),), generator=g).double()
    return [t.to(device=device, dtype=dtype) for t in (x, w, b, s, gy)]


def _check_all(shape, nm, dtype, device, atol, config=None):
    x, w, b, s, gy = make(*shape, dtype, device)
    m = nm_mask_reference(s, *nm)
    assert bool((m.view(shape[1], -1, nm[1]).sum(-1) == nm[0]).all())
    kw = dict(scores=s, nm=nm)
    y = K.masked_matmul(x, w, b, **kw, _config=config)
    w_eff = torch.where(m, w, 0)
    ref_y = x.double() @ torch.where(m, w.double(), 0.0).t() + b.double()
    assert_close_2x(y, x @ w_eff.t() + b, ref_y, atol)
    dx = K.masked_matmul_grad_input(gy, w, **kw, _config=config)
    assert_close_2x(dx, gy @ w_eff, gy.double() @ torch.where(m, w.double(), 0.0), atol)
    ds, dw = K.masked_matmul_grad_weight(gy, x, w, **kw, want_scores=True, want_weight=True, _config=config)
    g64, gl = gy.double().t() @ x.double(), gy.t() @ x
    assert ds.dtype == s.dtype and dw.dtype == w.dtype
    assert_close_2x(ds, gl * w, g64 * w.double(), atol)
    assert_close_2x(dw, torch.where(m, gl, 0), torch.where(m, g64, 0.0), atol)
    assert (dw[~m] == 0).all()


# float64 in the interpreter; on a GPU float32 here, bf16 and every autotune config below
DTYPES = [torch.float32] + ([] if torch.cuda.is_available() else [torch.float64])


@pytest.mark.parametrize("shape,nm", [(s, p) for s in SHAPES for p in PATTERNS if s[2] % p[1] == 0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nm_mode_matches_float64_reference(shape, nm, dtype, device):
    _check_all(shape, nm, dtype, device, 1e-6 if dtype == torch.float32 else 1e-12)


def test_nm_mode_selects_exactly_the_reference_mask(device):
    """Same mask as the fixed-mask path given the reference's selection, bit for bit (fp32)."""
    x, w, b, s, gy = make(9, 31, 44, torch.float32, device)
    m = nm_mask_reference(s, 2, 4)
    assert torch.equal(K.masked_matmul(x, w, b, scores=s, nm=(2, 4)), K.masked_matmul(x, w, b, mask=m))
    assert torch.equal(K.masked_matmul_grad_input(gy, w, scores=s, nm=(2, 4)),
                       K.masked_matmul_grad_input(gy, w, mask=m))


def test_reference_agrees_with_the_ops_layer():
    from tamt.ops.nm import nm_mask

    s = torch.randint(0, 3, (17, 48)).float()
    for nm in PATTERNS:
        assert torch.equal(nm_mask_reference(s, *nm), nm_mask(s, *nm))


def test_nm_mode_argument_errors(device):
    x, w, b, s, _ = make(3, 5, 12, torch.float32, device)
    with pytest.raises(ValueError, match="no threshold"):
        K.masked_matmul(x, w, scores=s, threshold=0.0, nm=(2, 4))
    with pytest.raises(ValueError, match="K % 8"):
        K.masked_matmul(x, w, scores=s, nm=(4, 8))
    with pytest.raises(ValueError, match="exactly one"):
        K.masked_matmul(x, w, mask=s > 0, scores=s, nm=(2, 4))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU-only: bf16 tl.dot and the autotune configs")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nm_mode_every_autotune_config_gpu(dtype):
    """Every config the pruner keeps for the N:M mode (its shared-memory estimate counts the group's score
    loads) launches and is right; the GEMM family's configs drive all three kernels' checks."""
    from tamt.kernels import _configs
    from tamt.kernels._common import MASK_NM

    atol = 1e-2 if dtype == torch.bfloat16 else 1e-4
    limit, cc = _configs.device_limits(torch.cuda.current_device())
    mm = _configs.surviving_configs("mm", dtype, MASK_NM, limit, capability=cc, which="full")
    gw = _configs.surviving_configs("gw", dtype, MASK_NM, limit, capability=cc, which="full")
    assert mm and gw
    x, w, b, s, gy = make(300, 260, 200, dtype, "cuda")
    s = s.float()
    m = nm_mask_reference(s, 2, 4)
    kw = dict(scores=s, nm=(2, 4))
    w_eff = torch.where(m, w, 0)
    for cfg in mm:
        y = K.masked_matmul(x, w, b, **kw, _config=cfg)
        assert_close_2x(y, x @ w_eff.t() + b, x.double() @ torch.where(m, w.double(), 0.0).t() + b.double(), atol)
        dx = K.masked_matmul_grad_input(gy, w, **kw, _config=cfg)
        assert_close_2x(dx, gy @ w_eff, gy.double() @ torch.where(m, w.double(), 0.0), atol)
    g64, gl = gy.double().t() @ x.double(), gy.t() @ x
    for cfg in gw:
        ds, dw = K.masked_matmul_grad_weight(gy, x, w, **kw, want_scores=True, want_weight=True, split_k=3,
                                             _config=cfg)
        assert_close_2x(ds.float(), (gl * w).float(), g64 * w.double(), atol)
        assert_close_2x(dw, torch.where(m, gl, 0), torch.where(m, g64, 0.0), atol)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU-only: bf16/fp16 tl.dot")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(512, 768, 768), (257, 3072, 768), (300, 768, 3072)])
def test_nm_mode_half_precision_bert_shapes_gpu(dtype, shape):
    _check_all(shape, (2, 4), dtype, "cuda", 1e-3 if dtype == torch.float16 else 1e-2)
