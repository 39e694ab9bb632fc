"""The native extension tamt._C (csrc/) against the torch references.

Every algorithm of the CUDA kernels has a CPU twin in csrc/cpu, so these tests
exercise the radix-select digit schedule, prefix filter and rank updates, the
mask bit layout, the binarize kernel and the fused AdamW + histogram step on
every CI run. With a CUDA build and a GPU, the same tests also run on "cuda".
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tamt import _native as N

if not N.available():
    pytest.skip(
        f"native extension not built: {N.unavailable_reason()} (CI builds it first: bash scripts/build_native.sh)",
        allow_module_level=True,
    )

REPO = Path(__file__).resolve().parents[2]

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not N.has_cuda(), reason=f"native CUDA kernels: {N.unavailable_reason('cuda')}")],
    ),
]


def ref_kth(t: torch.Tensor, k: int) -> torch.Tensor:
    if k == 0:
        return torch.tensor(float("-inf"), dtype=t.dtype)
    return torch.kthvalue(t.detach().reshape(-1).cpu(), k).values


def assert_thresholds(scores, ks, got, dtype=None):
    assert got.shape == (len(scores),)
    for i, (t, k) in enumerate(zip(scores, ks)):
        want = ref_kth(t.to(dtype) if dtype is not None else t, k)
        g = got[i].cpu().to(want.dtype)
        # bit-exact up to the sign of zero (kthvalue may return -0.0 or +0.0
        # for a tie of zeros; both compare equal and give the same mask)
        assert torch.equal(g, want) or (torch.isnan(g) and torch.isnan(want)), (i, k, t.numel(), g.item(), want.item())


# ---------------------------------------------------------------------------
# segmented k-th smallest
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_select_random_odd_sizes(device):
    g = torch.Generator().manual_seed(0)
    shapes = [(1,), (2,), (7,), (3, 5), (123, 77), (17, 769), (1000,), (33, 1025)]
    scores = [torch.randn(s, generator=g).to(device) for s in shapes]
    ks = []
    for t in scores:
        n = t.numel()
        ks.append(int(torch.randint(0, n + 1, (1,), generator=g)))
    ks[0], ks[1] = 1, 2  # k = n
    ks[2] = 0
    got = N.segmented_kth_smallest(scores, ks)
    assert got.dtype == torch.float32 and got.device.type == device
    assert_thresholds(scores, ks, got)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("s", [0.0, 0.1, 0.5, 0.9, 0.999, 1.0])
def test_select_sparsities_including_limits(device, s):
    g = torch.Generator().manual_seed(1)
    scores = [torch.randn(n, generator=g).to(device) for n in (5, 97, 1024, 4099)]
    ks = [int(s * t.numel()) for t in scores]
    got = N.segmented_kth_smallest(scores, ks)
    assert_thresholds(scores, ks, got)
    for t, k, tau in zip(scores, ks, got):
        assert int((t <= tau).sum()) == k  # no ties: exactly k pruned


@pytest.mark.parametrize("device", DEVICES)
def test_select_ties_constants_specials(device):
    g = torch.Generator().manual_seed(2)
    omp_like = torch.where(torch.rand(3001, generator=g) < 0.5, 0.0, 0.02)  # two score levels (OMP init)
    small_ints = torch.randint(-3, 4, (5000,), generator=g).float()
    const = torch.full((77, 13), 3.5)
    zeros = torch.zeros(100)
    signed_zeros = torch.tensor([0.0, -0.0] * 50)
    inf = float("inf")
    specials = torch.tensor([inf, -inf, 1.0, -1.0, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, float("nan")])
    scores = [omp_like, small_ints, const, zeros, signed_zeros, specials]
    for k_of in (lambda n: 1, lambda n: n // 2, lambda n: n - 1, lambda n: n):
        ks = [k_of(t.numel()) for t in scores]
        got = N.segmented_kth_smallest([t.to(device) for t in scores], ks)
        assert_thresholds(scores, ks, got)
    # every rank of the specials (NaN is the largest value, as in torch.sort)
    ks = list(range(specials.numel() + 1))
    got = N.segmented_kth_smallest([specials.to(device)] * len(ks), ks)
    assert_thresholds([specials] * len(ks), ks, got)


@pytest.mark.parametrize("device", DEVICES)
def test_select_dtypes(device):
    g = torch.Generator().manual_seed(3)
    base = [torch.randn(n, generator=g) for n in (9, 1000, 4097)]
    ks = [4, 500, 4097]
    got64 = N.segmented_kth_smallest([t.double().to(device) for t in base], ks)
    assert got64.dtype == torch.float64
    assert_thresholds([t.double() for t in base], ks, got64)
    for dt in (torch.bfloat16, torch.float16):
        got = N.segmented_kth_smallest([t.to(dt).to(device) for t in base], ks)
        assert got.dtype == torch.float32
        assert_thresholds([t.to(dt) for t in base], ks, got, dtype=torch.float32)
    mixed = [base[0].double(), base[1], base[2].bfloat16()]
    got = N.segmented_kth_smallest([t.to(device) for t in mixed], ks)
    assert got.dtype == torch.float64
    assert_thresholds(mixed, ks, got, dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_select_non_contiguous_and_empty_segments(device):
    g = torch.Generator().manual_seed(4)
    a = torch.randn(50, 40, generator=g).to(device).t()  # non-contiguous view
    e = torch.empty(0, device=device)
    got = N.segmented_kth_smallest([a, e, a], [1000, 0, 2000])
    assert_thresholds([a, e, a], [1000, 0, 2000], got)


def test_select_empty_list_and_errors():
    out = N.segmented_kth_smallest([], [])
    assert out.shape == (0,)
    with pytest.raises(ValueError):
        N.segmented_kth_smallest([torch.randn(5)], [6])
    with pytest.raises(ValueError):
        N.segmented_kth_smallest([torch.randn(5)], [-1])
    with pytest.raises(ValueError):
        N.segmented_kth_smallest([torch.randn(5)], [1, 2])
    with pytest.raises(TypeError):
        N.segmented_kth_smallest([torch.arange(5)], [1])
    with pytest.raises(ValueError):
        N.segmented_kth_smallest([torch.randn(5)], [1], hist_bits=13)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hist_bits", [4, 8, 11, 12])
def test_select_from_first_digit_histogram(device, hist_bits):
    g = torch.Generator().manual_seed(5)
    scores = [torch.randn(n, generator=g).to(device) for n in (1, 300, 5003)] + [torch.zeros(64, device=device)]
    ks = [1, 150, 2500, 32]
    hist = torch.stack([N.key_histogram_reference(t.cpu(), hist_bits) for t in scores]).to(device)
    got = N.segmented_kth_smallest(scores, ks, first_hist=hist, hist_bits=hist_bits)
    assert_thresholds(scores, ks, got)
    plain = N.segmented_kth_smallest(scores, ks, hist_bits=hist_bits)
    assert torch.equal(got, plain)


def test_select_rejects_inconsistent_histogram():
    t = torch.randn(1000)
    bad = torch.zeros(1, 1 << 11, dtype=torch.int64)
    bad[0, 0] = 1000  # claims every key is in bin 0
    with pytest.raises(RuntimeError, match="histogram"):
        N.segmented_kth_smallest([t], [500], first_hist=bad)


def test_select_segment_larger_than_2_pow_24():
    # one segment with more than 2^24 elements (and many ties: torch.rand has
    # 2^24 distinct values), next to small ones
    g = torch.Generator().manual_seed(6)
    big = torch.rand((1 << 24) + 1237, generator=g)
    small = torch.randn(1001, generator=g)
    ks = [int(0.7 * big.numel()), 1, big.numel(), 500]
    got = N.segmented_kth_smallest([big, small, big, small], ks)
    want = torch.stack([ref_kth(big, ks[0]), ref_kth(small, 1), big.max(), ref_kth(small, 500)])
    assert torch.equal(got, want)


# ---------------------------------------------------------------------------
# bit packing
# ---------------------------------------------------------------------------
def ref_pack(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.reshape(-1).to(torch.uint8)
    n = flat.numel()
    padded = torch.zeros(((n + 7) // 8) * 8, dtype=torch.uint8)
    padded[:n] = flat.cpu()
    weights = (1 << torch.arange(8, dtype=torch.int32)).to(torch.int32)
    return (padded.view(-1, 8).to(torch.int32) * weights).sum(1).to(torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 1000, 1_000_003])
def test_pack_unpack_vs_reference(device, n):
    g = torch.Generator().manual_seed(n)
    mask = (torch.rand(n, generator=g) < 0.3).to(device)
    packed = N.pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.shape == ((n + 7) // 8,)
    assert torch.equal(packed.cpu(), ref_pack(mask))
    assert torch.equal(N.unpack_mask(packed, n), mask)


@pytest.mark.parametrize("device", DEVICES)
def test_pack_shapes_views_and_offsets(device):
    g = torch.Generator().manual_seed(7)
    m = (torch.rand(37, 29, generator=g) > 0.5).to(device)
    assert torch.equal(N.pack_mask(m).cpu(), ref_pack(m))
    mt = m.t()  # non-contiguous: packed in its row-major order
    assert torch.equal(N.pack_mask(mt).cpu(), ref_pack(mt.contiguous()))
    off = m.reshape(-1)[3:]  # storage offset: unaligned start
    assert torch.equal(N.pack_mask(off).cpu(), ref_pack(off))
    assert torch.equal(N.pack_mask(torch.ones(13, dtype=torch.bool, device=device)).cpu(), torch.tensor([255, 31], dtype=torch.uint8))
    # unpack into an unaligned length from a buffer with spare bytes
    packed = torch.randint(0, 256, (20,), generator=g, dtype=torch.uint8).to(device)
    out = N.unpack_mask(packed, 101)
    bits = ((packed.cpu().to(torch.int32)[:, None] >> torch.arange(8)) & 1).reshape(-1)[:101].bool()
    assert torch.equal(out.cpu(), bits)
    with pytest.raises(ValueError):
        N.unpack_mask(packed, 161)
    with pytest.raises(TypeError):
        N.pack_mask(torch.ones(3, device=device))


# ---------------------------------------------------------------------------
# binarize and mask
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("wdt", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("sdt", [torch.float32, torch.bfloat16, torch.float16])
def test_binarize_and_mask_exact(device, wdt, sdt):
    g = torch.Generator().manual_seed(8)
    w = torch.randn(65, 33, generator=g).to(wdt).to(device)
    s = torch.randn(65, 33, generator=g).to(sdt).to(device)
    s.view(-1)[:5] = 0.0  # ties at the threshold are pruned
    for thr in (torch.tensor(0.0), torch.tensor([0.1]), torch.tensor(0.999), torch.tensor(float("-inf")), 0.25, -0.5):
        t = thr.to(device) if isinstance(thr, torch.Tensor) else thr
        want = w * (s > t)
        got = N.binarize_and_mask(w, s, t)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.equal(got, want)
        assert torch.equal(torch.signbit(got), torch.signbit(want))


def test_binarize_threshold_rounding_follows_torch():
    # bf16 scores with a 0-d fp32 threshold compare in bf16 (0.999 -> 1.0);
    # a 1-element 1-D threshold promotes the comparison to fp32
    s = torch.ones(4, dtype=torch.bfloat16)
    w = torch.ones(4)
    for t in (torch.tensor(0.999), torch.tensor([0.999]), 0.999):
        assert torch.equal(N.binarize_and_mask(w, s, t), w * (s > t))


# ---------------------------------------------------------------------------
# fused AdamW + first-digit histogram
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adamw_step_matches_torch_adamw(device, weight_decay):
    g = torch.Generator().manual_seed(9)
    shapes = [(3,), (37, 41), (256, 129), (5000,)]
    init = [torch.randn(s, generator=g) * 0.02 for s in shapes]
    ref = [torch.nn.Parameter(t.clone().to(device)) for t in init]
    mine = [t.clone().to(device) for t in init]
    exp_avg = [torch.zeros_like(t) for t in mine]
    exp_avg_sq = [torch.zeros_like(t) for t in mine]
    hp = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    opt = torch.optim.AdamW(ref, foreach=False, **hp)
    hist_bits = 11
    for step in range(1, 6):
        grads = [torch.randn(s, generator=g).to(device) for s in shapes]
        for p, gr in zip(ref, grads):
            p.grad = gr.clone()
        opt.step()
        hist = N.adamw_scores_step(
            mine, grads, exp_avg, exp_avg_sq, lr=hp["lr"], beta1=0.9, beta2=0.999, eps=1e-8,
            weight_decay=weight_decay, step=step, hist_bits=hist_bits,
        )
        for p, q in zip(ref, mine):
            torch.testing.assert_close(q, p.detach(), rtol=0, atol=1e-6)
        for p, m, v in zip(ref, exp_avg, exp_avg_sq):
            st = opt.state[p]
            torch.testing.assert_close(m, st["exp_avg"], rtol=1e-6, atol=1e-9)
            torch.testing.assert_close(v, st["exp_avg_sq"], rtol=1e-6, atol=1e-12)
        # the histogram is exactly that of the updated scores
        want = torch.stack([N.key_histogram_reference(q.cpu(), hist_bits) for q in mine])
        assert hist.dtype == torch.int64 and torch.equal(hist.cpu(), want)
        # ... and it gives the same thresholds as a full search
        ks = [int(0.6 * q.numel()) for q in mine]
        taus = N.segmented_kth_smallest_from_histogram(mine, ks, hist, hist_bits)
        assert_thresholds(mine, ks, taus)


def test_adamw_step_foreach_reference_and_empty():
    g = torch.Generator().manual_seed(10)
    init = [torch.randn(1000, generator=g), torch.randn(31, 7, generator=g)]
    ref = [torch.nn.Parameter(t.clone()) for t in init]
    opt = torch.optim.AdamW(ref, lr=5e-5, weight_decay=0.0, foreach=True)
    mine = [t.clone() for t in init]
    m = [torch.zeros_like(t) for t in mine]
    v = [torch.zeros_like(t) for t in mine]
    for step in range(1, 4):
        grads = [torch.randn(t.shape, generator=g) for t in init]
        for p, gr in zip(ref, grads):
            p.grad = gr.clone()
        opt.step()
        N.adamw_scores_step(mine, grads, m, v, lr=5e-5, step=step)
    for p, q in zip(ref, mine):
        torch.testing.assert_close(q, p.detach(), rtol=0, atol=1e-6)
    assert N.adamw_scores_step([], [], [], [], lr=1e-3, step=1).shape == (0, 1 << N.DEFAULT_HIST_BITS)
    with pytest.raises(ValueError):
        N.adamw_scores_step(mine, grads, m, v, lr=1e-3, step=0)
    with pytest.raises(TypeError):
        N.adamw_scores_step([mine[0].double()], [grads[0].double()], [m[0]], [v[0]], lr=1e-3, step=1)


# ---------------------------------------------------------------------------
# torch op registration
# ---------------------------------------------------------------------------
def test_torch_ops_opcheck():
    g = torch.Generator().manual_seed(11)
    x = [torch.randn(100, generator=g), torch.randn(7, 9, generator=g).reshape(-1)]
    torch.library.opcheck(torch.ops.tamt_native.segmented_kth_smallest.default, (x, [50, 63], None, 11))
    mask = torch.rand(77, generator=g) > 0.5
    torch.library.opcheck(torch.ops.tamt_native.pack_mask.default, (mask,))
    torch.library.opcheck(torch.ops.tamt_native.unpack_mask.default, (N.pack_mask(mask), 77))
    w, s = torch.randn(30, generator=g), torch.randn(30, generator=g)
    torch.library.opcheck(torch.ops.tamt_native.binarize_and_mask.default, (w, s, torch.tensor([0.1])))
    p = [torch.randn(64, generator=g)]
    args = (p, [torch.randn(64, generator=g)], [torch.zeros(64)], [torch.zeros(64)], 1e-3, 0.9, 0.999, 1e-8, 0.0, 1, 11)
    torch.library.opcheck(torch.ops.tamt_native.adamw_scores_step.default, args)


def test_unavailable_path_reports_once():
    code = (
        "import warnings\n"
        "from tamt import _native as N\n"
        "assert not N.available() and 'TAMT_NATIVE=0' in N.unavailable_reason()\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    N.warn_unavailable(); N.warn_unavailable()\n"
        "assert len(w) == 1 and 'native backend off' in str(w[0].message), w\n"
        "try:\n"
        "    import torch; N.pack_mask(torch.ones(3, dtype=torch.bool))\n"
        "except RuntimeError as e:\n"
        "    assert 'unavailable' in str(e)\n"
        "else:\n"
        "    raise AssertionError('expected RuntimeError')\n"
    )
    env = dict(os.environ, TAMT_NATIVE="0", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------
# CUDA sources compile for sm_80 and sm_90 (about 20 s; skipped without nvcc)
# ---------------------------------------------------------------------------
@pytest.mark.slow
def test_cuda_sources_compile_sm80_sm90():
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").exists():
        pytest.skip("nvcc not found: CUDA compile check skipped")
    r = subprocess.run(["bash", str(REPO / "scripts" / "check_cuda_compile.sh")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") >= 2 * len(list((REPO / "csrc" / "cuda").glob("*.cu")))
