#!/usr/bin/env python
"""Benchmark the masked GEMMs and thresholds the way training runs them.

GEMMs, search mode as the modules run it: weights in bf16 (or fp32), fp32
scores, threshold at 70 % sparsity, x and the scores need gradients, the
weight is frozen. BERT-base weights [out, in] (768x768, 3072x768, 768x3072;
--full adds BERT-large and more token counts). Every path runs with autograd:
  * dense        F.linear on the unmasked W (forward; forward+backward with
                 dX and dW): the floor,
  * unfused      materialise W * (S > tau) with a straight-through function
                 and F.linear (the reference implementation's way),
  * tamt plans   ``tamt.ops.masked_linear`` (the public op, autograd and all
                 host overhead included) with each mask form of
                 ``tamt.ops.mask_forms``: scores / uint8 / packed (fused
                 Triton GEMMs) and materialize (W*M once per step, cuBLAS).
                 "fwd" reuses the step's mask (built once per optimizer step
                 and shared by every micro-batch); "step" = building the
                 step's mask + forward + backward of ONE micro-batch (the
                 least favourable case for the prebuilt forms).
Thresholds: the 73 BERT-base score matrices (12 x 6 + pooler + word
embeddings 30522x768, 85M scores), k = floor(0.7 n): tamt.ops.topk_thresholds
(what the search loop calls) and the raw segmented radix select vs
per-matrix torch.kthvalue / torch.topk / torch.sort.

On a GPU it prints the four targets as PASS/FAIL lines
  forward >= 0.9x dense F.linear, forward+backward >= 1.3x unfused,
  thresholds >= 10x per-matrix kthvalue and >= 3x topk,
and writes the measured plan table that ``auto`` reads
(benchmarks/results/auto/<device>.json, see tamt.ops.auto_table).

Timing: triton.testing.do_bench median on CUDA (it flushes L2 before every
run); time.perf_counter median on CPU. Every ratio is against a baseline
measured in the same run. On a CPU the Triton GEMMs only run in the
interpreter (--interpret-kernels, tiny --smoke shapes): a code-path check,
not a speed.

Needs only torch and triton (no datasets, hypothesis or pytest-benchmark).

  python benchmarks/bench_kernels.py [--quick | --full] [--out PATH] [--auto-table PATH]
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BERT_BASE = [(768, 768), (3072, 768), (768, 3072)]
BERT_LARGE = [(1024, 1024), (4096, 1024), (1024, 4096)]
PLANS = ("scores", "uint8", "packed", "materialize")
FUSED = ("scores", "uint8", "packed")
SPARSITY = 0.7
TARGET_FWD, TARGET_STEP, TARGET_KTH, TARGET_TOPK = 0.9, 1.3, 10.0, 3.0


# ----------------------------------------------------------------- timing
CPU_REPS = 20  # --smoke: 1
CUDA_BENCH = dict(warmup=25, rep=100)  # --quick: 10 / 50 ms (the GPU suite's budget)


def bench(fn, device, reps: int | None = None, grad_to_none=None) -> float:
    """Median milliseconds of fn(); grads of grad_to_none are reset between
    runs (no accumulation kernels in the timing)."""
    reps = CPU_REPS if reps is None else min(reps, CPU_REPS)
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, **CUDA_BENCH, grad_to_none=grad_to_none, return_mode="median"))
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
def _ste_class():
    import torch

    class STEMask(torch.autograd.Function):
        @staticmethod
        def forward(ctx, scores, tau):
            return (scores > tau).to(scores.dtype)

        @staticmethod
        def backward(ctx, g):
            return g, None

    return STEMask


def unfused_forward(x, w, b, s, tau, ste):
    import torch.nn.functional as F

    return F.linear(x, w * ste.apply(s, tau).to(w.dtype), b)


# ----------------------------------------------------------------- GEMMs
def gemm_cases(args, device):
    import torch

    if args.smoke:
        return [("smoke", 64, 48, 40, torch.float32)]
    if device.type == "cpu":
        return [("bert-base", 256 if args.quick else 1024, n, k, torch.float32) for n, k in BERT_BASE]
    models = [("bert-base", BERT_BASE)] + ([("bert-large", BERT_LARGE)] if args.full else [])
    tokens = [8192] if not args.full else [512, 2048, 8192]
    dtypes = [torch.bfloat16] + ([torch.float32] if args.full else [])
    return [(m, t, n, k, d) for m, mats in models for d in dtypes for t in tokens for n, k in mats]


def run_gemm(model, T, N, K, dtype, device, plans, run_dense=True):
    """Rows for one shape: dense, unfused and every plan, fwd and step."""
    import torch
    import torch.nn.functional as F

    from tamt import ops
    from tamt.ops import mask_forms

    ste = _ste_class()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(T, K, device=device, dtype=dtype, generator=g)
    w = (torch.randn(N, K, device=device, dtype=dtype, generator=g) * 0.02)
    b = torch.randn(N, device=device, dtype=dtype, generator=g)
    s = torch.randn(N, K, device=device, dtype=torch.float32, generator=g)  # fp32 scores, as the modules keep them
    tau = ops.topk_threshold(s, SPARSITY)
    gy = torch.randn(T, N, device=device, dtype=dtype, generator=g)
    flops = 2.0 * T * N * K
    rows = []

    def record(mode, impl, ms, nflops):
        rows.append(dict(kind="gemm", model=model, tokens=T, out_features=N, in_features=K,
                         dtype=str(dtype).replace("torch.", ""), scores_dtype="float32", mode=mode, impl=impl,
                         ms=ms, tflops=nflops / (ms * 1e-3) / 1e12))

    xg = x.clone().requires_grad_()
    sg = s.clone().requires_grad_()
    wg = w.clone().requires_grad_()
    if run_dense:
        with torch.no_grad():
            record("fwd", "dense", bench(lambda: F.linear(x, w, b), device), flops)
            record("fwd", "unfused", bench(lambda: unfused_forward(x, w, b, s, tau, ste), device), flops)

        def dense_step():
            F.linear(xg, wg, b).backward(gy)

        def unfused_step():
            unfused_forward(xg, w, b, sg, tau, ste).backward(gy)

        record("step", "dense", bench(dense_step, device, grad_to_none=[xg, wg]), 3 * flops)
        record("step", "unfused", bench(unfused_step, device, grad_to_none=[xg, sg]), 3 * flops)

    ref_y = unfused_forward(x.float(), w.float(), b.float(), s, tau, ste)
    ref_ds = ((gy.float().t() @ x.float()) * w.float())
    for plan in plans:
        backend = "triton" if plan in FUSED else "auto"
        with ops.use_backend(backend), ops.use_mask_form(plan):
            # correctness guard: never time a wrong kernel
            mask_forms.invalidate(sg)
            sg.grad = xg.grad = None
            y = ops.masked_linear(xg, w, b, scores=sg, threshold=tau)
            y.backward(gy)
            err_y = (y.detach().float() - ref_y).abs().max().item() / max(ref_y.abs().max().item(), 1e-6)
            err_s = (sg.grad.float() - ref_ds).abs().max().item() / max(ref_ds.abs().max().item(), 1e-6)
            sg.grad = xg.grad = None
            tol = 1e-4 if dtype == torch.float32 else 3e-2
            if err_y > tol or err_s > tol:
                raise RuntimeError(f"{plan} wrong for {model} {T}x{N}x{K} {dtype}: rel err y {err_y:.2e}, "
                                   f"dscores {err_s:.2e}")
            with torch.no_grad():  # the step's mask is cached: GEMM only
                record("fwd", plan, bench(lambda: ops.masked_linear(x, w, b, scores=s, threshold=tau), device), flops)

            def step():
                mask_forms.invalidate(sg)  # one micro-batch per step: the mask build is timed too
                ops.masked_linear(xg, w, b, scores=sg, threshold=tau).backward(gy)

            record("step", plan, bench(step, device, grad_to_none=[xg, sg]), 3 * flops)
            if plan != "scores":
                def build():
                    mask_forms.invalidate(s)
                    ops.step_mask(w, scores=s, threshold=tau, form=plan)

                record("build", plan, bench(build, device), 0.0)
        mask_forms.invalidate()
    return rows


# ----------------------------------------------------------------- thresholds
def bert_base_score_shapes(scale: int = 1):
    mats = []
    for _ in range(12):
        mats += [(768, 768)] * 4 + [(3072, 768), (768, 3072)]
    mats += [(768, 768), (30522, 768)]
    return [(max(1, a // scale), max(1, b // scale)) for a, b in mats]


def threshold_rows(args, device, run_kernel: bool):
    import torch

    from tamt import ops

    scale = 1
    if args.smoke:
        scale = 32
    elif device.type == "cpu":
        scale = 8 if args.quick else 2
    shapes = bert_base_score_shapes(scale)
    sizes = [a * b for a, b in shapes]
    total = sum(sizes)
    g = torch.Generator(device=device).manual_seed(0)
    flat = torch.randn(total, device=device, generator=g)
    views = list(torch.split(flat, sizes))
    separate = [v.clone() for v in views]
    ks = [int(math.floor(SPARSITY * n)) for n in sizes]
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
    got = ops.topk_thresholds(separate, SPARSITY)
    if not torch.equal(got.cpu(), want.cpu()):
        raise RuntimeError("tamt.ops.topk_thresholds disagrees with torch.kthvalue")
    from tamt.ops import _backend

    used = _backend.resolve("select", device.type, ("torch", "triton", "native"))
    record(f"tamt.ops.topk_thresholds ({used})", bench(lambda: ops.topk_thresholds(separate, SPARSITY), device, reps))
    if run_kernel and not args.smoke:
        from tamt import kernels as K

        if not torch.equal(K.segmented_kth_smallest(views, ks).cpu(), want.cpu()):
            raise RuntimeError("segmented_kth_smallest disagrees with torch.kthvalue")
        record("triton segmented radix (flat buffer)", bench(lambda: K.segmented_kth_smallest(views, ks), device, reps))
        record("triton segmented radix (73 tensors)", bench(lambda: K.segmented_kth_smallest(separate, ks), device, reps))
    record("torch.kthvalue loop", bench(kth_loop, device, reps))
    record("torch.topk loop", bench(topk_loop, device, reps))
    record("torch.sort loop", bench(sort_loop, device, reps))
    return rows


# ----------------------------------------------------------------- analysis
def _by(rows, **want):
    return [r for r in rows if all(r.get(k) == v for k, v in want.items())]


def best_plans(rows) -> dict:
    """{(N, K, tokens, dtype): (best plan, {plan: step ms})} from the 'step' rows."""
    out = {}
    for r in _by(rows, kind="gemm", mode="step"):
        if r["impl"] not in PLANS:
            continue
        key = (r["out_features"], r["in_features"], r["tokens"], r["dtype"])
        out.setdefault(key, {})[r["impl"]] = r["ms"]
    return {k: (min(v, key=v.get), v) for k, v in out.items()}


def auto_table_from_rows(rows, env) -> dict:
    from tamt.ops import auto_table

    entries = []
    for (n, k, t, dtype), (best, ms) in sorted(best_plans(rows).items()):
        entries.append(dict(out_features=n, in_features=k, tokens=t, dtype=dtype, scores_dtype="float32",
                            best=best, ms={p: round(v, 5) for p, v in ms.items()}))
    return dict(format=auto_table.FORMAT, device_name=env.get("device_name"), capability=env.get("sm"),
                torch=env.get("torch"), triton=env.get("triton"), created=env.get("date"),
                autotune=env.get("autotune"),
                source="benchmarks/bench_kernels.py (search mode, fp32 scores, fwd+bwd of one micro-batch incl. "
                       "the per-step mask build, median ms)", entries=entries)


def targets(rows) -> list[tuple[str, bool | None, str]]:
    """(name, passed or None when not measured, detail) of the four targets,
    on the BERT-base shapes at the largest measured token count."""
    out = []
    base = [r for r in _by(rows, kind="gemm") if (r["out_features"], r["in_features"]) in BERT_BASE
            and r["dtype"] == "bfloat16"]
    tmax = max((r["tokens"] for r in base), default=None)
    base = [r for r in base if r["tokens"] == tmax]

    def ms(mode, impl, n, k):
        hit = [r["ms"] for r in base if r["mode"] == mode and r["impl"] == impl
               and (r["out_features"], r["in_features"]) == (n, k)]
        return hit[0] if hit else None

    fwd_ratios, step_ratios = [], []
    for n, k in BERT_BASE:
        dense = ms("fwd", "dense", n, k)
        fused = {p: ms("fwd", p, n, k) for p in FUSED if ms("fwd", p, n, k) is not None}
        if dense and fused:
            p = min(fused, key=fused.get)
            mat = ms("fwd", "materialize", n, k)
            info = f"; materialize {dense / mat:.2f}x" if mat else ""
            fwd_ratios.append((dense / fused[p], f"{n}x{k} {dense / fused[p]:.2f}x ({p}{info})"))
        unf = ms("step", "unfused", n, k)
        plans = {p: ms("step", p, n, k) for p in PLANS if ms("step", p, n, k) is not None}
        if unf and plans:
            p = min(plans, key=plans.get)
            step_ratios.append((unf / plans[p], f"{n}x{k} {unf / plans[p]:.2f}x ({p})"))

    def verdict(name, ratios, target, what):
        if len(ratios) < len(BERT_BASE):
            out.append((name, None, f"not measured ({what})"))
        else:
            worst = min(r for r, _ in ratios)
            out.append((name, worst >= target, f"min {worst:.2f}x: " + ", ".join(d for _, d in ratios)))

    verdict(f"forward >= {TARGET_FWD}x dense F.linear (BERT-base bf16, {tmax} tokens, best fused form, "
            "mask prebuilt for the step)", fwd_ratios, TARGET_FWD, "needs bf16 fused GEMMs on a GPU")
    verdict(f"forward+backward >= {TARGET_STEP}x unfused PyTorch (BERT-base bf16, {tmax} tokens, best tamt plan "
            "incl. the per-step mask build)", step_ratios, TARGET_STEP, "needs bf16 GEMMs on a GPU")
    thr = _by(rows, kind="threshold")
    ours = next((r for r in thr if r["impl"].startswith("tamt.ops.topk_thresholds")), None)
    for name, impl, target in (("kthvalue", "torch.kthvalue loop", TARGET_KTH), ("topk", "torch.topk loop", TARGET_TOPK)):
        base_r = next((r for r in thr if r["impl"] == impl), None)
        label = f"all BERT-base thresholds >= {target:g}x per-matrix {name} (tamt.ops.topk_thresholds)"
        if ours and base_r and "dims /" not in ours["what"]:
            ratio = base_r["ms"] / ours["ms"]
            out.append((label, ratio >= target, f"{ratio:.1f}x ({ours['impl']}, {ours['ms']:.3f} ms vs "
                                                 f"{base_r['ms']:.3f} ms)"))
        else:
            out.append((label, None, "not measured at full size"))
    return out


def print_tables(rows):
    gem = _by(rows, kind="gemm")
    if gem:
        keys = sorted({(r["model"], r["tokens"], r["out_features"], r["in_features"], r["dtype"]) for r in gem},
                      key=lambda k: (k[0], k[4], k[1], k[2] * k[3], k[2]))
        print(f"\n{'model':10s} {'tok':>5s} {'N x K':>10s} {'dtype':>8s} {'mode':>5s} {'dense':>8s} {'unfused':>8s} "
              + " ".join(f"{p:>11s}" for p in PLANS) + "   (ms; xN = speed-up over unfused)")
        for key in keys:
            sel = [r for r in gem if (r["model"], r["tokens"], r["out_features"], r["in_features"], r["dtype"]) == key]
            for mode in ("fwd", "step", "build"):
                by = {r["impl"]: r["ms"] for r in sel if r["mode"] == mode}
                if not by:
                    continue
                unf = by.get("unfused")
                cells = []
                for p in PLANS:
                    v = by.get(p)
                    cells.append(f"{'-':>11s}" if v is None else
                                 (f"{v:6.3f}" + (f" {unf / v:3.1f}x" if unf else "     ")).rjust(11))
                d = by.get("dense")
                print(f"{key[0]:10s} {key[1]:5d} {f'{key[2]}x{key[3]}':>10s} {key[4]:>8s} {mode:>5s} "
                      f"{(f'{d:8.3f}' if d else '-'.rjust(8))} {(f'{unf:8.3f}' if unf else '-'.rjust(8))} "
                      + " ".join(cells))
        print("(fwd: forward only, the step's mask already built; step: mask build + forward + backward of one "
              "micro-batch; build: the per-step mask pass alone)")
    thr = _by(rows, kind="threshold")
    if thr:
        print(f"\nthresholds: {thr[0]['what']}, k = floor({SPARSITY} n)")
        ref = next((r["ms"] for r in thr if r["impl"].startswith("tamt.ops")), None)
        for r in thr:
            ratio = f"  {r['ms'] / ref:7.2f}x tamt's time" if ref else ""
            print(f"  {r['impl']:40s} {r['ms']:10.3f} ms  {r['gb_per_s']:8.1f} GB/s{ratio}")


def environment(device):
    import torch

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
    env["autotune"] = os.environ.get("TAMT_AUTOTUNE", "full")
    return env


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="BERT-base, bf16, 8192 tokens, TAMT_AUTOTUNE=quick (3 configs per kernel; ~2 min on a GPU)")
    size.add_argument("--full", action="store_true", help="+ BERT-large, 512/2048/8192 tokens, fp32")
    size.add_argument("--smoke", action="store_true", help="tiny shapes: a code-path check (CI, CPU interpreter)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/kernels-<device>-<date>.json)")
    ap.add_argument("--auto-table", default=None,
                    help="where to write the measured plan table (default, on a GPU: "
                         "benchmarks/results/auto/<device>.json, the file `auto` reads); 'none' to skip")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--skip-thresholds", action="store_true")
    ap.add_argument("--interpret-kernels", action="store_true",
                    help="on a CPU, also run the Triton kernels in the interpreter (slow; no speed to measure)")
    args = ap.parse_args(argv)
    if args.interpret_kernels:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    if args.quick:
        os.environ.setdefault("TAMT_AUTOTUNE", "quick")  # read when tamt.kernels is imported
    import torch

    global CPU_REPS, CUDA_BENCH
    if args.smoke:
        CPU_REPS = 1
    if args.quick:
        CUDA_BENCH = dict(warmup=10, rep=50)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run_triton = device.type == "cuda" or args.interpret_kernels
    env = environment(device)
    print("environment:", json.dumps(env), flush=True)
    rows = []
    if not args.skip_gemm:
        plans = PLANS if run_triton else ("materialize",)
        if not run_triton:
            print("GEMMs: no GPU and no --interpret-kernels: timing the PyTorch paths (dense, unfused, materialize)")
        for model, T, N, K, dtype in gemm_cases(args, device):
            t0 = time.time()
            rows += run_gemm(model, T, N, K, dtype, device, plans)
            print(f"  {model} {T} tokens {N}x{K} {str(dtype)[6:]}: {time.time() - t0:.1f} s", flush=True)
    if not args.skip_thresholds:
        rows += threshold_rows(args, device, run_kernel=run_triton)
    print_tables(rows)

    result = dict(environment=env, args=vars(args), results=rows)
    if device.type == "cuda" and not args.skip_gemm:
        table = auto_table_from_rows(rows, env)
        result["auto_table"] = table
        if args.auto_table != "none":
            from tamt.ops import auto_table

            dest = Path(args.auto_table) if args.auto_table else auto_table.RESULTS_DIR / \
                f"{auto_table.device_slug(env['device_name'])}.json"
            _atomic_write(dest, json.dumps(table, indent=1) + "\n")
            print(f"\nwrote the measured plan table for `auto`: {dest}")
    print()
    for name, ok, detail in targets(rows):
        status = "UNMEASURED" if ok is None or device.type != "cuda" else ("PASS" if ok else "FAIL")
        print(f"TARGET {status}: {name}: {detail}")
    if args.out:
        out = Path(args.out)
    else:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", env.get("device_name") or device.type).strip("-")
        out = REPO / "benchmarks" / "results" / f"kernels-{name}-{_dt.date.today().isoformat()}.json"
    _atomic_write(out, json.dumps(result, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
