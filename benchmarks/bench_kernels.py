#!/usr/bin/env python
"""Benchmark the tamt Triton kernels against the PyTorch paths they replace.

GEMMs (search mode: x and scores need grad, W frozen, bias frozen), BERT-base
(768x768, 3072x768, 768x3072) and BERT-large (1024x1024, 4096x1024,
1024x4096) weights [out, in] at 4096 and 8192 tokens, fp32 and bf16:
  * fused   - tamt.kernels: mask applied on the W-tile load; backward = the
              masked grad-input GEMM + the grad-weight GEMM with dS = G*W in
              its epilogue,
  * unfused - materialise W*(S>tau), F.linear; backward by autograd through a
              straight-through function (dW_eff, then dS = dW_eff * W),
  * dense   - F.linear on the unmasked W (forward; forward+backward with dX
              and dW): the floor the fused kernel should approach.
Thresholds: the 73 BERT-base score matrices (12 x 6 + pooler + word
embeddings 30522x768, 85M scores), k = floor(0.7 n): one segmented radix
select vs per-matrix torch.kthvalue / torch.topk / torch.sort.

Timing: triton.testing.do_bench median on CUDA (it flushes L2 before every
run), time.perf_counter median on CPU. Every ratio is against a baseline
measured in the same run. On a CPU the Triton GEMMs only run in the
interpreter, which says nothing about speed, so they are skipped.

  python benchmarks/bench_kernels.py [--quick] [--out PATH]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BERT_BASE = [(768, 768), (3072, 768), (768, 3072)]
BERT_LARGE = [(1024, 1024), (4096, 1024), (1024, 4096)]


# ----------------------------------------------------------------- timing
def bench(fn, device: torch.device, reps: int = 20, grad_to_none=None) -> float:
    """Median milliseconds of fn(); grads of grad_to_none are reset between
    runs (no accumulation kernels in the timing)."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median"))
    fn()
    times = []
    for _ in range(reps):
        for t in grad_to_none or ():
            t.grad = None
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ----------------------------------------------------------------- unfused
class _STEMask(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, tau):
        return (scores > tau).to(scores.dtype)

    @staticmethod
    def backward(ctx, g):
        return g, None


def unfused_forward(x, w, b, s, tau):
    return F.linear(x, w * _STEMask.apply(s, tau), b)


# ----------------------------------------------------------------- GEMMs
def gemm_rows(args, device, K):
    rows = []
    tokens = [4096] if args.quick else [4096, 8192]
    shapes = [("bert-base", BERT_BASE), ("bert-large", BERT_LARGE)]
    if args.quick:
        shapes = [("bert-base", BERT_BASE)]
    dtypes = [torch.float32, torch.bfloat16]
    run_fused = K is not None
    if device.type == "cpu":
        tokens = [256] if args.quick else [1024]
        dtypes = [torch.float32]
    for model, mats in shapes:
        for T in tokens:
            for dtype in dtypes:
                for N, Kd in mats:
                    rows.extend(_one_gemm(model, T, N, Kd, dtype, device, K, run_fused, args))
    return rows


def _one_gemm(model, T, N, Kd, dtype, device, K, run_fused, args):
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(T, Kd, device=device, dtype=dtype, generator=g)
    w = torch.randn(N, Kd, device=device, dtype=dtype, generator=g) * 0.02
    b = torch.randn(N, device=device, dtype=dtype, generator=g)
    s = torch.randn(N, Kd, device=device, dtype=dtype, generator=g)
    tau = torch.quantile(s.float().reshape(-1)[:1_000_000], 0.7).to(dtype)
    gy = torch.randn(T, N, device=device, dtype=dtype, generator=g)
    flops_fwd = 2.0 * T * N * Kd
    out = []

    def record(mode, impl, ms, flops):
        out.append(dict(kind="gemm", model=model, tokens=T, out_features=N, in_features=Kd,
                        dtype=str(dtype).replace("torch.", ""), mode=mode, impl=impl, ms=ms,
                        tflops=flops / (ms * 1e-3) / 1e12))

    # forward
    record("fwd", "dense", bench(lambda: F.linear(x, w, b), device), flops_fwd)
    with torch.no_grad():
        record("fwd", "unfused", bench(lambda: unfused_forward(x, w, b, s, tau), device), flops_fwd)
    if run_fused:
        record("fwd", "fused", bench(lambda: K.masked_matmul(x, w, b, scores=s, threshold=tau), device), flops_fwd)

    # forward + backward (3 GEMMs)
    xg = x.clone().requires_grad_()
    wg = w.clone().requires_grad_()
    sg = s.clone().requires_grad_()

    def dense_fb():
        y = F.linear(xg, wg, b)
        y.backward(gy)

    def unfused_fb():
        y = unfused_forward(xg, w, b, sg, tau)
        y.backward(gy)

    def fused_fb():
        K.masked_matmul(x, w, b, scores=s, threshold=tau)
        K.masked_matmul_grad_input(gy, w, scores=s, threshold=tau)
        K.masked_matmul_grad_weight(gy, x, w, scores=s, threshold=tau, want_scores=True, want_weight=False)

    record("fwd+bwd", "dense", bench(dense_fb, device, grad_to_none=[xg, wg]), 3 * flops_fwd)
    record("fwd+bwd", "unfused", bench(unfused_fb, device, grad_to_none=[xg, sg]), 3 * flops_fwd)
    if run_fused:
        record("fwd+bwd", "fused", bench(fused_fb, device), 3 * flops_fwd)
        # correctness guard: the benchmark must not time a wrong kernel
        ref = unfused_forward(x.float(), w.float(), b.float(), s.float(), tau.float())
        got = K.masked_matmul(x, w, b, scores=s, threshold=tau).float()
        err = (got - ref).abs().max().item() / max(ref.abs().max().item(), 1e-6)
        if err > (2e-2 if dtype != torch.float32 else 1e-4):
            raise RuntimeError(f"fused forward wrong for {model} {T}x{N}x{Kd} {dtype}: rel err {err:.2e}")
    return out


# ----------------------------------------------------------------- thresholds
def bert_base_score_shapes(scale: int = 1):
    mats = []
    for _ in range(12):
        mats += [(768, 768)] * 4 + [(3072, 768), (768, 3072)]
    mats += [(768, 768), (30522, 768)]
    return [(max(1, a // scale), max(1, b // scale)) for a, b in mats]


def threshold_rows(args, device, K, sparsity=0.7):
    scale = 1
    run_kernel = K is not None
    if device.type == "cpu":
        scale = 8 if args.quick else 2
        if run_kernel and not args.interpret_kernels:
            run_kernel = False
            print("thresholds: the Triton select only runs in the interpreter on a CPU (no speed to measure); "
                  "skipped (pass --interpret-kernels to time it anyway)")
    shapes = bert_base_score_shapes(scale)
    sizes = [a * b for a, b in shapes]
    total = sum(sizes)
    g = torch.Generator(device=device).manual_seed(0)
    flat = torch.randn(total, device=device, generator=g)
    views = list(torch.split(flat, sizes))
    separate = [v.clone() for v in views]
    ks = [int(math.floor(sparsity * n)) for n in sizes]
    label = f"bert-base 73 matrices, {total / 1e6:.1f}M scores" + (f" (dims / {scale})" if scale > 1 else "")
    rows = []

    def record(impl, ms):
        rows.append(dict(kind="threshold", what=label, elements=total, impl=impl, ms=ms,
                         gb_per_s=total * 4 / (ms * 1e-3) / 1e9))

    def kth_loop():
        return [torch.kthvalue(t, k).values for t, k in zip(separate, ks)]

    def topk_loop():
        # k-th smallest = smallest of the (n - k + 1) largest
        return [torch.topk(t, t.numel() - k + 1, largest=True, sorted=False).values.min() for t, k in zip(separate, ks)]

    def sort_loop():
        return [torch.sort(t).values[k - 1] for t, k in zip(separate, ks)]

    reps = 3 if device.type == "cpu" else 20
    want = torch.stack(kth_loop())
    if run_kernel:
        got = K.segmented_kth_smallest(views, ks)
        if not torch.equal(got.cpu(), want.cpu()):
            raise RuntimeError("segmented_kth_smallest disagrees with torch.kthvalue")
        record("segmented radix (flat buffer)", bench(lambda: K.segmented_kth_smallest(views, ks), device, reps))
        record("segmented radix (73 tensors)", bench(lambda: K.segmented_kth_smallest(separate, ks), device, reps))
    record("torch.kthvalue loop", bench(kth_loop, device, reps))
    record("torch.topk loop", bench(topk_loop, device, reps))
    record("torch.sort loop", bench(sort_loop, device, reps))
    return rows


# ----------------------------------------------------------------- report
def print_tables(rows):
    gem = [r for r in rows if r["kind"] == "gemm"]
    if gem:
        print(f"\n{'model':10s} {'tok':>5s} {'N x K':>11s} {'dtype':>8s} {'mode':>8s} "
              f"{'dense ms':>9s} {'unfus ms':>9s} {'fused ms':>9s} {'fused TF/s':>10s} {'vs unfus':>9s} {'vs dense':>9s} {'unfus/dense':>11s}")
        keys = sorted({(r["model"], r["tokens"], r["out_features"], r["in_features"], r["dtype"], r["mode"]) for r in gem},
                      key=lambda k: (k[0], k[1], k[4], k[5], k[2] * k[3], k[2]))
        for k in keys:
            by = {r["impl"]: r for r in gem if (r["model"], r["tokens"], r["out_features"], r["in_features"], r["dtype"], r["mode"]) == k}
            d, u, f = by.get("dense"), by.get("unfused"), by.get("fused")
            fm = f"{f['ms']:9.3f}" if f else f"{'-':>9s}"
            ft = f"{f['tflops']:10.1f}" if f else f"{'-':>10s}"
            vu = f"{u['ms'] / f['ms']:8.2f}x" if f else f"{'-':>9s}"
            vd = f"{d['ms'] / f['ms']:8.2f}x" if f else f"{'-':>9s}"
            print(f"{k[0]:10s} {k[1]:5d} {f'{k[2]}x{k[3]}':>11s} {k[4]:>8s} {k[5]:>8s} "
                  f"{d['ms']:9.3f} {u['ms']:9.3f} {fm} {ft} {vu} {vd} {u['ms'] / d['ms']:10.2f}x")
        print("(vs unfus / vs dense: speed-up of fused over that baseline, >1 = fused faster; "
              "unfus/dense: time of the unfused path over dense; TF/s counts 2MNK per GEMM)")
    thr = [r for r in rows if r["kind"] == "threshold"]
    if thr:
        print(f"\nthresholds: {thr[0]['what']}, k = floor(0.7 n)")
        base = {r["impl"]: r["ms"] for r in thr}
        ref = next((base[k] for k in base if k.startswith("segmented radix (flat")), None)
        for r in thr:
            ratio = f"  {r['ms'] / ref:7.2f}x the segmented select" if ref else ""
            print(f"  {r['impl']:32s} {r['ms']:10.3f} ms  {r['gb_per_s']:8.1f} GB/s{ratio}")


def environment(device):
    env = dict(
        date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        host=platform.node(), python=platform.python_version(), torch=torch.__version__,
        cuda=torch.version.cuda, device=str(device),
    )
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(device_name=p.name, sm=f"{p.major}{p.minor}", sms=p.multi_processor_count)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        except Exception:
            env["driver"] = None
    else:
        env.update(device_name=platform.processor() or "cpu", threads=torch.get_num_threads())
    return env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer shapes (BERT-base, 4096 tokens); < 2 min on a CPU")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/kernels-<device>-<date>.json)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--skip-thresholds", action="store_true")
    ap.add_argument("--interpret-kernels", action="store_true",
                    help="on a CPU, also run the Triton threshold select in the interpreter (slow, not a speed number)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and args.interpret_kernels:
        os.environ["TRITON_INTERPRET"] = "1"

    K = None
    if device.type == "cuda" or args.interpret_kernels:
        from tamt import kernels as K  # noqa: N812
    env = environment(device)
    print("environment:", json.dumps(env))
    rows = []
    if not args.skip_gemm:
        if device.type == "cpu":
            print("GEMMs: no GPU, the Triton GEMMs would only run in the interpreter (meaningless timings): "
                  "timing the PyTorch unfused and dense paths only")
        rows += gemm_rows(args, device, K if device.type == "cuda" else None)
    if not args.skip_thresholds:
        rows += threshold_rows(args, device, K)
    print_tables(rows)

    if args.out:
        out = Path(args.out)
    else:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", env.get("device_name") or device.type).strip("-")
        out = REPO / "benchmarks" / "results" / f"kernels-{name}-{_dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(environment=env, args=vars(args), results=rows), indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
