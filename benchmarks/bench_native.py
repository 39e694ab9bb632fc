#!/usr/bin/env python
"""Benchmark the native extension (tamt._C) against plain torch (and Triton on CUDA).

What is compared, with random scores of the masked-matrix shapes of MiniLM-L6
(38 matrices) and BERT-base (74 matrices: 12 layers x 6, pooler, word
embeddings 30522 x 768):

* thresholds of all masked matrices: native segmented radix select (one call)
  vs torch per-matrix ``kthvalue`` (and, on CUDA, vs the Triton
  ``tamt.kernels.segmented_kth_smallest`` and a per-matrix ``topk``);
* one optimizer step with exact top-k: native fused AdamW + first-digit
  histogram, then the select from that histogram, vs ``torch.optim.AdamW``
  (fused, torch's fastest) + per-matrix ``kthvalue``, and + the native select (the
  fused step's gain is then the select's skipped first pass);
* mask packing and the fused binarize-and-mask of the word embedding.

Medians over repeats; ratios are torch_time / native_time (> 1: native faster),
measured in the same run. Results go to benchmarks/results/native-<device>-<date>.json.

    python benchmarks/bench_native.py [--quick] [--device cpu|cuda] [--models minilm,bert-base]

Exits 77 with a "SKIP: <reason>" line when the native kernels cannot run on the device (not built, built
without CUDA, no device, a toolkit newer than the driver).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tamt import _native as N  # noqa: E402

VOCAB = 30522
SKIP_EXIT = 77  # "cannot run here" (automake's skip code), with a "SKIP: <reason>" line


def masked_shapes(layers: int, hidden: int, inter: int) -> list[tuple[int, int]]:
    shapes = []
    for _ in range(layers):
        shapes += [(hidden, hidden)] * 4  # query, key, value, attention output
        shapes += [(inter, hidden), (hidden, inter)]  # intermediate, output
    shapes.append((hidden, hidden))  # pooler
    shapes.append((VOCAB, hidden))  # word embeddings
    return shapes


MODELS = {
    "minilm-l6": masked_shapes(6, 384, 1536),  # 38 matrices
    "bert-base": masked_shapes(12, 768, 3072),  # 74 matrices
}


# ---------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------
def timer(device: torch.device, fn, reps: int, warmup: int = 1) -> float:
    """Median seconds of fn() over reps runs (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def environment(device: torch.device) -> dict:
    env = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "native_threads": N._C.cpu_num_threads() if N._C is not None else None,
        "native_with_cuda": bool(N._C.WITH_CUDA) if N._C is not None else None,
        "native_cuda_archs": getattr(N._C, "CUDA_ARCHS", None),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
    try:
        env["cpu"] = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        env["cpu"] = platform.processor()
    try:
        env["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except Exception:
        pass
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        try:
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True
            ).stdout.strip()
        except Exception:
            pass
        try:
            import triton

            env["triton"] = triton.__version__
        except Exception:
            env["triton"] = None
    return env


# ---------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------
def torch_kthvalue_all(scores, ks):
    out = []
    for s, k in zip(scores, ks):
        out.append(torch.kthvalue(s.reshape(-1), k).values if k > 0 else s.new_tensor(float("-inf")))
    return torch.stack(out)


def torch_topk_all(scores, ks):
    # k-th smallest = smallest of the (n - k + 1) largest: multi-block radix select on CUDA
    out = []
    for s, k in zip(scores, ks):
        f = s.reshape(-1)
        out.append(torch.topk(f, f.numel() - k + 1, largest=True, sorted=False).values.min() if k > 0 else f.new_tensor(float("-inf")))
    return torch.stack(out)


def bench_model(name: str, shapes, device: torch.device, sparsity: float, reps: int, rows: list, check: bool) -> None:
    g = torch.Generator(device="cpu").manual_seed(0)
    scores = [(torch.randn(s, generator=g) * 0.02).to(device) for s in shapes]
    ks = [int(sparsity * s.numel()) for s in scores]
    numel = sum(s.numel() for s in scores)
    tag = f"{name} ({len(shapes)} matrices, {numel / 1e6:.1f}M scores, s={sparsity})"
    print(f"\n== {tag}")

    def add(case, impl, seconds, baseline=None):
        row = {"model": name, "matrices": len(shapes), "scores": numel, "case": case, "impl": impl, "median_ms": seconds * 1e3}
        if baseline is not None:
            row["speedup_vs_baseline"] = baseline / seconds
        rows.append(row)
        extra = f"   x{baseline / seconds:6.2f} vs torch" if baseline is not None else ""
        print(f"  {case:<34} {impl:<28} {seconds * 1e3:10.2f} ms{extra}")

    # ---- thresholds of all matrices -------------------------------------
    if check:
        want = torch_kthvalue_all(scores, ks)
        got = N.segmented_kth_smallest(scores, ks)
        assert torch.equal(got, want), "native thresholds differ from torch.kthvalue"
    t_torch = timer(device, lambda: torch_kthvalue_all(scores, ks), reps)
    add("thresholds", "torch kthvalue per matrix", t_torch)
    if device.type == "cuda":
        add("thresholds", "torch topk per matrix", timer(device, lambda: torch_topk_all(scores, ks), reps), t_torch)
        try:
            from tamt import kernels as K

            flats = [s.reshape(-1) for s in scores]
            K.segmented_kth_smallest(flats, ks)
            add("thresholds", "triton segmented select", timer(device, lambda: K.segmented_kth_smallest(flats, ks), reps), t_torch)
        except Exception as exc:  # triton missing or failing: say so, keep going
            print(f"  (triton segmented select skipped: {type(exc).__name__}: {exc})")
    t_nat = timer(device, lambda: N.segmented_kth_smallest(scores, ks), reps)
    add("thresholds", "native segmented select", t_nat, t_torch)
    hist = torch.stack([N.key_histogram_reference(s.cpu().reshape(-1)) for s in scores]).to(device)
    t_nat_h = timer(device, lambda: N.segmented_kth_smallest(scores, ks, first_hist=hist), reps)
    add("thresholds (first pass done)", "native select from histogram", t_nat_h, t_torch)

    # ---- one optimizer step with exact top-k ----------------------------
    params = [torch.nn.Parameter(s.clone()) for s in scores]
    grads = [(torch.randn(s.shape, generator=g) * 1e-3).to(device) for s in scores]
    for p, gr in zip(params, grads):
        p.grad = gr
    # torch's fastest AdamW (fused, what tamt.optim.adamw uses); the foreach default is slower on a CPU
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.0, fused=True)
    opt.step()  # create the state

    def torch_step():
        opt.step()
        return torch_kthvalue_all([p.detach() for p in params], ks)

    nat_s = [s.clone() for s in scores]
    m = [torch.zeros_like(s) for s in scores]
    v = [torch.zeros_like(s) for s in scores]
    step = [0]

    def native_adamw():
        step[0] += 1
        return N.adamw_scores_step(nat_s, grads, m, v, lr=5e-5, weight_decay=0.0, step=step[0])

    def native_step():
        h = native_adamw()
        return N.segmented_kth_smallest(nat_s, ks, first_hist=h)

    t_opt = timer(device, lambda: opt.step(), reps)
    add("AdamW step only", "torch AdamW (fused)", t_opt)
    add("AdamW step only", "native fused AdamW+histogram", timer(device, native_adamw, reps), t_opt)
    t_ts = timer(device, torch_step, reps)
    add("AdamW step + thresholds", "torch AdamW + kthvalue", t_ts)

    def torch_native_select():
        opt.step()
        return N.segmented_kth_smallest([p.detach() for p in params], ks)

    add("AdamW step + thresholds", "torch AdamW + native select", timer(device, torch_native_select, reps), t_ts)
    add("AdamW step + thresholds", "native fused step + select", timer(device, native_step, reps), t_ts)
    del params, opt, grads, nat_s, m, v

    # ---- masks: packing and W*M of the largest matrix (word embeddings) --
    emb = scores[-1]
    w = (torch.randn(emb.shape, generator=g) * 0.05).to(device)
    tau = N.segmented_kth_smallest([emb], [ks[-1]])[0]
    mask = emb > tau
    ref_pack_bits = (1 << torch.arange(8, dtype=torch.uint8)).to(device)

    def torch_pack():
        f = mask.reshape(-1)
        pad = (-f.numel()) % 8
        if pad:
            f = torch.cat([f, f.new_zeros(pad)])
        return (f.view(-1, 8).to(torch.uint8) * ref_pack_bits).sum(1, dtype=torch.uint8)

    if check:
        assert torch.equal(N.pack_mask(mask), torch_pack())
        assert torch.equal(N.binarize_and_mask(w, emb, tau), w * (emb > tau))
    t = timer(device, torch_pack, reps)
    add("pack mask (word emb.)", "torch", t)
    add("pack mask (word emb.)", "native", timer(device, lambda: N.pack_mask(mask), reps), t)
    packed = N.pack_mask(mask)
    t = timer(device, lambda: ((packed.view(-1, 1) >> torch.arange(8, device=device, dtype=torch.uint8)) & 1).view(-1)[: mask.numel()].bool(), reps)
    add("unpack mask (word emb.)", "torch", t)
    add("unpack mask (word emb.)", "native", timer(device, lambda: N.unpack_mask(packed, mask.numel()), reps), t)
    t = timer(device, lambda: w * (emb > tau), reps)
    add("W*(S>tau) (word emb.)", "torch", t)
    add("W*(S>tau) (word emb.)", "native binarize_and_mask", timer(device, lambda: N.binarize_and_mask(w, emb, tau), reps), t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="MiniLM-L6 only, 3 repeats")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--models", default=None, help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--sparsity", type=float, default=0.7)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--no-check", action="store_true", help="skip the correctness checks before timing")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/native-<device>-<date>.json)")
    ap.add_argument("--dry-run", action="store_true", help="only check that the native kernels can run on the device")
    args = ap.parse_args()

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if not N.available(device):
        # not a failure of the benchmark: the GPU suite records it as skipped with this reason
        print(f"SKIP: native backend unavailable on {device}: {N.unavailable_reason(device)}")
        return SKIP_EXIT
    if args.dry_run:
        print(f"dry run: the native kernels can run on {device}")
        return 0
    models = args.models.split(",") if args.models else (["minilm-l6"] if args.quick else list(MODELS))
    reps = args.reps or (3 if args.quick else 7)
    env = environment(device)
    print("environment:", json.dumps(env, indent=None, default=str))
    rows: list = []
    for name in models:
        bench_model(name, MODELS[name], device, args.sparsity, reps, rows, check=not args.no_check)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    dev_name = "cpu" if device.type == "cpu" else torch.cuda.get_device_name(device).replace(" ", "_")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"native-{dev_name}-{_dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"environment": env, "device": str(device), "reps": reps, "quick": args.quick, "results": rows}, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
