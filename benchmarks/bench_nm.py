#!/usr/bin/env python
"""2:4 subnetworks on sparse tensor cores: per-layer GEMM and whole-model inference, vs dense.

Needs an NVIDIA GPU with sparse tensor cores (sm_80+, e.g. A100/H100/H200),
bf16, BERT-base shapes, batch x seq = 8192 tokens (16 x 512):

  * per-layer GEMM, weights [out, in] = 768x768 (Q, K, V, attention output),
    3072x768 (intermediate), 768x3072 (output):
      dense        F.linear with the 2:4-pruned weight stored dense,
      sparse 2:4   F.linear with torch.sparse semi-structured weight
                   (cuSPARSELt, else CUTLASS), what tamt.load_sparse builds,
      search fwd   tamt's fused Triton forward in search mode: threshold
                   (S > tau) vs N:M (group top-2 chosen in the tile load);
                   both against the dense GEMM (how much the mask costs);
  * inference latency of a BERT-base encoder (random weights: the hub is not
    reachable from the GPU machine, and latency does not depend on the values)
    pruned OMP-2:4 by tamt, exported with tamt.export_subnetwork and loaded
    (a) dense-zeroed with transformers.AutoModel, (b) with tamt.load_sparse;
    the outputs of (a) and (b) are compared as a sanity check.

Timing: triton.testing.do_bench median (L2 flushed before every run) on
CUDA; every ratio is against a baseline measured in the same run.  Results
(with device, driver and library versions) go to a JSON file.

  python benchmarks/bench_nm.py [--quick] [--out PATH]
  python benchmarks/bench_nm.py --smoke      # CPU, tiny shapes: checks the script runs (no speed meaning)
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BERT_BASE = [(768, 768), (3072, 768), (768, 3072)]
_CPU_REPS = {"n": 10}  # timed repetitions on CPU (--smoke: 2, its timings mean nothing)


def bench(fn, device: torch.device) -> float:
    """Median milliseconds of fn()."""
    if device.type == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times = []
    for _ in range(_CPU_REPS["n"]):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def environment(device: torch.device) -> dict:
    env = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=p.name, sm=f"{p.major}{p.minor}", driver=_driver())
        env["cusparselt"] = bool(getattr(getattr(torch.backends, "cusparselt", None), "is_available", lambda: False)())
    for name in ("triton", "transformers"):
        try:
            env[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            env[name] = f"missing ({type(exc).__name__})"
    return env


def _driver() -> str:
    import subprocess

    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


# ------------------------------------------------------------------ per-layer GEMMs
def gemm_rows(shapes, tokens: int, device: torch.device, dtype: torch.dtype, triton_ok: bool) -> list[dict]:
    from tamt.export import _semi_structured_class, acceleration_unavailable_reason
    from tamt.ops.nm import magnitude_nm_mask

    reason = acceleration_unavailable_reason(device, dtype)
    rows = []
    g = torch.Generator(device="cpu").manual_seed(0)
    for out_f, in_f in shapes:
        x = torch.randn(tokens, in_f, generator=g).to(device, dtype)
        w = torch.randn(out_f, in_f, generator=g).to(device, dtype)
        keep = magnitude_nm_mask(w, 2, 4)
        w24 = torch.where(keep, w, torch.zeros((), dtype=dtype, device=device))
        row = {"shape": [out_f, in_f], "tokens": tokens, "dtype": str(dtype).removeprefix("torch.")}
        row["dense_ms"] = bench(lambda: F.linear(x, w24), device)
        if reason is None:
            ws = _semi_structured_class().from_dense(w24.contiguous())
            y_s = F.linear(x, ws)
            row["sparse_check_max_abs_err"] = float((y_s.float() - F.linear(x, w24).float()).abs().max())
            row["sparse24_ms"] = bench(lambda: F.linear(x, ws), device)
            row["sparse24_speedup_vs_dense"] = row["dense_ms"] / row["sparse24_ms"]
        else:
            row["sparse24_ms"] = None
            row["sparse24_unmeasured"] = reason
        if triton_ok:
            from tamt import kernels

            s = torch.randn(out_f, in_f, generator=g).to(device, torch.float32)
            tau = torch.quantile(s.flatten()[: 2**20].float(), 0.5).to(device)
            row["search_threshold_ms"] = bench(lambda: kernels.masked_matmul(x, w, scores=s, threshold=tau), device)
            row["search_nm_ms"] = bench(lambda: kernels.masked_matmul(x, w, scores=s, nm=(2, 4)), device)
            row["search_nm_vs_threshold"] = row["search_threshold_ms"] / row["search_nm_ms"]
            row["search_nm_vs_dense"] = row["dense_ms"] / row["search_nm_ms"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------ whole model
def model_row(config, batch: int, seq: int, device: torch.device, dtype: torch.dtype, workdir: Path) -> dict:
    import transformers as tf

    import tamt
    from tamt.export import export_subnetwork, load_sparse
    from tamt.nn import get_masks

    torch.manual_seed(0)
    base = tf.BertModel(config).eval()
    pruned = tf.BertModel(config).eval()
    pruned.load_state_dict(base.state_dict())
    tamt.patch_model(pruned, structure="2:4")  # OMP-2:4 on every Linear (embeddings unstructured 0.5)
    out = export_subnetwork(get_masks(pruned), base, workdir / "bert24", overwrite=True)
    dense = tf.AutoModel.from_pretrained(out, dtype=dtype).to(device).eval()
    sparse = load_sparse(out, device=device, dtype=dtype)
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=device)
    with torch.no_grad():
        a = dense(ids).last_hidden_state.float()
        b = sparse(ids).last_hidden_state.float()
        row = {"model": f"BERT (hidden {config.hidden_size}, {config.num_hidden_layers} layers)", "batch": batch,
               "seq": seq, "tokens": batch * seq, "dtype": str(dtype).removeprefix("torch."),
               "accelerated_linears": len(sparse.tamt_sparse["accelerated"]),
               "sparse_reason": sparse.tamt_sparse["reason"],
               "max_abs_diff_sparse_vs_dense": float((a - b).abs().max()), "dense_out_max": float(a.abs().max())}
        row["dense_ms"] = bench(lambda: dense(ids), device)
        row["load_sparse_ms"] = bench(lambda: sparse(ids), device)
    # no speedup to speak of when load_sparse fell back to dense: both rows then time the same model
    row["speedup"] = None if sparse.tamt_sparse["reason"] else row["dense_ms"] / row["load_sparse_ms"]
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one GEMM shape, 4 layers in the model test")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: check the script runs (no speed meaning)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/nm-<device>-<date>.json)")
    args = ap.parse_args(argv)
    import transformers as tf

    if args.smoke:
        _CPU_REPS["n"] = 2
        device, dtype, tokens, shapes = torch.device("cpu"), torch.float32, 64, [(64, 32)]
        config = tf.BertConfig(vocab_size=128, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=128, max_position_embeddings=64)
        batch, seq = 2, 16
    elif not torch.cuda.is_available():
        print("bench_nm: no CUDA device; the 2:4 GPU rows stay unmeasured (run with --smoke to check the script "
              "on a CPU)")
        return 0
    else:
        device, dtype, tokens = torch.device("cuda"), torch.bfloat16, 8192
        shapes = BERT_BASE[1:2] if args.quick else BERT_BASE
        config = tf.BertConfig(num_hidden_layers=4 if args.quick else 12)  # BERT-base shapes
        batch, seq = 16, 512
    env = environment(device)
    print("environment:", json.dumps(env), flush=True)
    triton_ok = device.type == "cuda"
    if triton_ok:
        try:
            import triton  # noqa: F401

            from tamt import kernels  # noqa: F401
        except Exception as exc:  # noqa: BLE001 - the sparse rows still run
            print(f"Triton kernels unavailable ({exc}); skipping the search-mode rows")
            triton_ok = False
    results = {"environment": env, "args": vars(args)}
    results["gemm"] = gemm_rows(shapes, tokens, device, dtype, triton_ok)
    with tempfile.TemporaryDirectory() as tmp:
        results["model"] = model_row(config, batch, seq, device, dtype, Path(tmp))
    if args.out:
        out = Path(args.out)
    else:
        name = env.get("gpu", "cpu").replace(" ", "-")
        out = REPO / "benchmarks" / "results" / f"nm-{name}-{_dt.date.today().isoformat()}.json"
    if not args.smoke or args.out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        print(f"wrote {out}")
    print("\nper-layer GEMM (ms, median)      dense   sparse2:4  speedup   search thr  search 2:4")
    for r in results["gemm"]:
        sp = f"{r['sparse24_ms']:.3f}" if r.get("sparse24_ms") else "unmeasured"
        sx = f"{r['sparse24_speedup_vs_dense']:.2f}x" if r.get("sparse24_speedup_vs_dense") else "-"
        st = f"{r['search_threshold_ms']:.3f}" if "search_threshold_ms" in r else "-"
        sn = f"{r['search_nm_ms']:.3f}" if "search_nm_ms" in r else "-"
        print(f"  {r['shape'][0]}x{r['shape'][1]} x {r['tokens']} tokens     {r['dense_ms']:8.3f}  {sp:>9}  {sx:>7}"
              f"  {st:>10}  {sn:>10}")
    m = results["model"]
    speed = f"speedup {m['speedup']:.2f}x" if m["speedup"] else f"speedup unmeasured ({m['sparse_reason']})"
    print(f"model {m['model']}, {m['tokens']} tokens: dense {m['dense_ms']:.2f} ms, load_sparse "
          f"{m['load_sparse_ms']:.2f} ms, {speed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
