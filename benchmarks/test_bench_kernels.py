"""pytest-benchmark micro-benchmarks of the tamt kernels (small, CPU-friendly).

Not collected by a plain `pytest` (testpaths = tests); run explicitly:
    PYTHONPATH=. python -m pytest benchmarks/test_bench_kernels.py --benchmark-only
Without a GPU the Triton kernels run in the interpreter: those numbers track
interpreter overhead, not kernel speed (use bench_kernels.py on a GPU).
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from tamt import kernels as K  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
M, N, KD = (4096, 768, 768) if DEVICE == "cuda" else (64, 96, 128)


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


@pytest.fixture(scope="module")
def gemm_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, KD, generator=g).to(DEVICE)
    w = torch.randn(N, KD, generator=g).to(DEVICE)
    b = torch.randn(N, generator=g).to(DEVICE)
    s = torch.randn(N, KD, generator=g).to(DEVICE)
    gy = torch.randn(M, N, generator=g).to(DEVICE)
    return x, w, b, s, gy, torch.tensor(0.5, device=DEVICE)


def _run(benchmark, fn):
    def call():
        fn()
        _sync()

    if DEVICE == "cpu":
        benchmark.pedantic(call, rounds=5, iterations=1, warmup_rounds=1)
    else:
        benchmark(call)


@pytest.mark.benchmark(group="masked_matmul_fwd")
def test_fused_forward(benchmark, gemm_inputs):
    x, w, b, s, _, tau = gemm_inputs
    _run(benchmark, lambda: K.masked_matmul(x, w, b, scores=s, threshold=tau))


@pytest.mark.benchmark(group="masked_matmul_fwd")
def test_unfused_forward(benchmark, gemm_inputs):
    x, w, b, s, _, tau = gemm_inputs
    _run(benchmark, lambda: torch.nn.functional.linear(x, w * (s > tau), b))


@pytest.mark.benchmark(group="masked_matmul_grad_weight")
def test_fused_grad_scores(benchmark, gemm_inputs):
    x, w, _, s, gy, tau = gemm_inputs
    _run(benchmark, lambda: K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=tau,
                                                        want_scores=True, want_weight=False))


@pytest.mark.benchmark(group="masked_matmul_grad_weight")
def test_unfused_grad_scores(benchmark, gemm_inputs):
    x, w, _, _, gy, _ = gemm_inputs
    _run(benchmark, lambda: (gy.t() @ x) * w)


@pytest.fixture(scope="module")
def segments():
    g = torch.Generator().manual_seed(1)
    sizes = [4096, 1000, 20000, 777, 12288] if DEVICE == "cpu" else [768 * 768] * 48 + [3072 * 768] * 24
    ts = [torch.randn(n, generator=g).to(DEVICE) for n in sizes]
    return ts, [int(0.7 * n) for n in sizes]


@pytest.mark.benchmark(group="thresholds")
def test_segmented_kth(benchmark, segments):
    ts, ks = segments
    _run(benchmark, lambda: K.segmented_kth_smallest(ts, ks))


@pytest.mark.benchmark(group="thresholds")
def test_kthvalue_loop(benchmark, segments):
    ts, ks = segments
    _run(benchmark, lambda: [torch.kthvalue(t, k) for t, k in zip(ts, ks)])
