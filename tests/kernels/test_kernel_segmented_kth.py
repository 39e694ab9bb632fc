"""Segmented radix select vs torch.kthvalue (bit-exact), many segments at once."""
from __future__ import annotations

import pytest
import torch
from _hypothesis_compat import HealthCheck, given, settings, st

from tamt import kernels as K


def kth_ref(ts, ks):
    out = []
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in ts) else torch.float32
    for t, k in zip(ts, ks):
        out.append(float("-inf") if k == 0 else torch.kthvalue(t.cpu(), k).values.item())
    return torch.tensor(out, dtype=dtype)


def assert_bitwise(got, want):
    got = got.cpu()
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    ibits = torch.int64 if want.dtype == torch.float64 else torch.int32
    if not torch.equal(got.view(ibits), want.view(ibits)):
        bad = (got.view(ibits) != want.view(ibits)).nonzero().reshape(-1)[:5].tolist()
        raise AssertionError(f"mismatch at segments {bad}: got {got[bad].tolist()} want {want[bad].tolist()}")


def rand_segments(lengths, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=torch.float64).to(dtype).to(device) for n in lengths]


def test_random_many_odd_segments(device):
    lengths = [1, 2, 3, 5, 7, 31, 64, 100, 129, 1000, 4095, 4097, 12345, 70001, 3, 1]
    ts = rand_segments(lengths, device=device)
    g = torch.Generator().manual_seed(1)
    ks = [int(torch.randint(1, n + 1, (1,), generator=g)) for n in lengths]
    out = K.segmented_kth_smallest(ts, ks)
    assert out.device == ts[0].device and out.dtype == torch.float32
    assert_bitwise(out, kth_ref(ts, ks))


@pytest.mark.parametrize("which", ["k1", "kn", "k0", "mid"])
def test_extreme_ranks(which, device):
    lengths = [1, 9, 300, 5000]
    ts = rand_segments(lengths, seed=2, device=device)
    ks = {"k1": [1] * 4, "kn": lengths, "k0": [0] * 4, "mid": [(n + 1) // 2 for n in lengths]}[which]
    out = K.segmented_kth_smallest(ts, ks)
    assert_bitwise(out, kth_ref(ts, ks))
    if which == "k0":
        assert torch.isneginf(out).all()


def test_ties_and_constant_segments(device):
    g = torch.Generator().manual_seed(4)
    ts = [
        torch.randint(0, 5, (1000,), generator=g).float(),  # heavy ties
        torch.full((777,), 3.25),  # constant
        (torch.rand(5000, generator=g) < 0.3).float() * 0.02,  # OMP init: {0, 2*t0}
        torch.full((1,), -7.0),
        torch.randint(-2, 2, (4099,), generator=g).float() * 1e-30,  # tiny values with ties
    ]
    ts = [t.to(device) for t in ts]
    for ks in ([1, 1, 1, 1, 1], [500, 777, 1500, 1, 2049], [1000, 400, 3500, 1, 4099], [999, 2, 4999, 0, 17]):
        out = K.segmented_kth_smallest(ts, ks)
        assert_bitwise(out, kth_ref(ts, ks))


def test_signed_zeros_and_infinities(device):
    v = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), 1.0, -1.0, 0.0, -0.0, float("inf")], device=device)
    for k in range(len(v) + 1):
        got = K.segmented_kth_smallest([v], [k]).cpu()
        want = kth_ref([v], [k])
        # -0.0 == +0.0: CPU kthvalue may return either zero; compare values
        assert got.item() == want.item() or (torch.isinf(got) & torch.isinf(want) & (got == want)).all(), (k, got, want)
        if k > 0:
            # the threshold semantics that matter: exactly as many values lie above tau
            assert int((v > got.to(device)).sum()) == int((v > want.to(device)).sum())


def test_all_infinite_and_k_equals_n(device):
    ts = [torch.full((10,), float("inf"), device=device), torch.full((3,), float("-inf"), device=device)]
    out = K.segmented_kth_smallest(ts, [10, 2])
    assert_bitwise(out, kth_ref(ts, [10, 2]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes(dtype, device):
    lengths = [17, 1000, 4500]
    ts = rand_segments(lengths, dtype=dtype, seed=5, device=device)
    ks = [5, 1000, 2000]
    out = K.segmented_kth_smallest(ts, ks)
    want = kth_ref(ts, ks)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_bitwise(out, want)
    # 16-bit results are exactly representable in the input dtype
    if dtype != torch.float64:
        assert torch.equal(out.cpu().to(dtype).float(), out.cpu())


def test_mixed_dtypes_promote_to_fp64(device):
    ts = [torch.randn(100, dtype=torch.float64, device=device), torch.randn(50, device=device).bfloat16()]
    out = K.segmented_kth_smallest(ts, [30, 10])
    assert out.dtype == torch.float64
    assert_bitwise(out, kth_ref(ts, [30, 10]))


def test_views_of_one_flat_buffer_zero_copy_path(device):
    flat = torch.randn(10000, device=device)
    sizes = [1000, 0, 3000, 6000]
    views = list(torch.split(flat, sizes))
    ks = [10, 0, 2999, 1]
    out = K.segmented_kth_smallest(views, ks)
    assert_bitwise(out, kth_ref(views, ks))
    # same answers as independent tensors (copy path)
    out2 = K.segmented_kth_smallest([v.clone() for v in views], ks)
    assert_bitwise(out2, kth_ref(views, ks))


def test_empty_segments_and_empty_list(device):
    ts = [torch.empty(0, device=device), torch.randn(5, device=device)]
    out = K.segmented_kth_smallest(ts, [0, 5])
    assert torch.isneginf(out[0]) and out[1].item() == ts[1].max().item()
    assert K.segmented_kth_smallest([], []).numel() == 0


def test_nan_raises(device):
    t = torch.randn(100, device=device)
    t[37] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        K.segmented_kth_smallest([torch.randn(10, device=device), t], [1, 50])


def test_bad_k_raises(device):
    with pytest.raises(ValueError):
        K.segmented_kth_smallest([torch.randn(10, device=device)], [11])
    with pytest.raises(ValueError):
        K.segmented_kth_smallest([torch.randn(10, device=device)], [-1])
    with pytest.raises(ValueError):
        K.segmented_kth_smallest([torch.randn(10, device=device)], [1, 2])


def test_does_not_sort_or_call_kthvalue(device, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("segmented_kth_smallest must not sort / kthvalue / topk")

    ts = rand_segments([100, 5000], seed=7, device=device)
    want = kth_ref(ts, [50, 1234])
    for name in ("sort", "kthvalue", "topk", "argsort", "msort"):
        monkeypatch.setattr(torch, name, forbidden)
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    out = K.segmented_kth_smallest(ts, [50, 1234])
    monkeypatch.undo()
    assert_bitwise(out, want)


def test_reference_function(device):
    ts = rand_segments([10, 20], seed=8, device=device)
    assert_bitwise(K.segmented_kth_smallest_reference(ts, [0, 20]).cpu(), kth_ref(ts, [0, 20]))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    segs=st.lists(
        st.tuples(st.integers(min_value=1, max_value=3000), st.floats(min_value=0.0, max_value=1.0)),
        min_size=1,
        max_size=6,
    ),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e30]),
)
def test_property_count_above_threshold(segs, seed, scale, device):
    """Tie-free data: exactly n - k values lie strictly above tau."""
    g = torch.Generator().manual_seed(seed)
    ts, ks = [], []
    for n, frac in segs:
        # distinct values: a random permutation of a strictly increasing grid
        base = torch.linspace(-1.0, 1.0, n, dtype=torch.float64) * scale
        ts.append(base[torch.randperm(n, generator=g)].float().to(device))
        ks.append(int(frac * n))
    for t in ts:
        assert torch.unique(t).numel() == t.numel()
    tau = K.segmented_kth_smallest(ts, ks)
    for t, k, tv in zip(ts, ks, tau.tolist()):
        assert int((t > tv).sum()) == t.numel() - k


# ---------------------------------------------------------------- GPU only
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bert_base_sized_gpu():
    """73 segments of BERT-base sizes on the GPU vs CUDA torch.kthvalue
    (radix select: its -0.0 < +0.0 ordering matches ours bit for bit)."""
    shapes = [(768, 768)] * 48 + [(3072, 768)] * 12 + [(768, 3072)] * 12 + [(768, 768)]
    g = torch.Generator(device="cuda").manual_seed(0)
    ts = [torch.randn(a * b, device="cuda", generator=g) for a, b in shapes]
    ts.append(torch.randn(30522 * 768, device="cuda", generator=g))
    ts[3][::7] = 0.0
    ts[3][1::7] = -0.0
    ks = [int(0.7 * t.numel()) for t in ts]
    out = K.segmented_kth_smallest(ts, ks)
    want = torch.stack([torch.kthvalue(t, k).values for t, k in zip(ts, ks)])
    assert torch.equal(out.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("bits", [8, 5])
def test_pick_digit_kernel_matches_torch_pick(bits, device):
    """The per-segment digit pick: the Triton kernel (used on GPUs) and the
    torch path (used under the interpreter) agree, incl. empty histograms."""
    from tamt.kernels import segmented_kth as SK

    g = torch.Generator().manual_seed(bits)
    S = 6
    hist = torch.randint(0, 50, (S, SK._NBINS), generator=g, dtype=torch.int32)
    hist[:, 1 << bits:] = 0
    hist[2] = 0
    hist[3, 7] = 1000  # one heavy bin (ties)
    total = hist.sum(1).to(torch.int64)
    k = torch.stack([torch.randint(1, int(n) + 1, (1,), generator=g)[0] if n > 0 else torch.tensor(1) for n in total])
    k[0] = total[0]  # k = n
    k[1] = 1
    prefix = torch.randint(0, 1 << 20, (S,), generator=g, dtype=torch.int64)
    args_kernel = [t.clone().to(device) for t in (hist, k, prefix)]
    args_torch = [t.clone().to(device) for t in (hist, k, prefix)]
    SK._pick_digit(*args_kernel, bits, use_kernel=True)
    SK._pick_digit(*args_torch, bits, use_kernel=False)
    for a, b in zip(args_kernel, args_torch):
        assert torch.equal(a.cpu(), b.cpu())
    assert (args_kernel[0] == 0).all()
