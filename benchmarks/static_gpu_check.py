#!/usr/bin/env python
"""Static GPU checks of the Triton kernels, no GPU needed.

Compiles every Triton kernel x every autotune config that survives pruning
for an NVIDIA target (sm_90 = H100/H200, sm_80 = A100) with the
specialisation a real launch gets, and checks the generated code:
  * shared memory within the target's opt-in limit (a config that survives
    pruning but needs more would fail the launch with OutOfResources),
  * no local-memory spills (``ptxas -v``, the same ptxas Triton uses),
  * for the 16-bit forward, grad-input and grad-weight GEMMs on sm_90: the
    PTX uses ``wgmma`` and there is no ``wgmma.wait_group 0`` inside the main
    K-loop (the loop stays pipelined).

The launch arguments are produced by calling the real host wrappers
(``tamt.kernels``) on meta tensors of BERT-base shapes with the launch
captured instead of run, so the signature, constexprs and divisibility
hints (pointers 16-byte aligned, sizes divisible by 16, ints equal to 1
folded) are those of a training launch. One record per kernel x config x
dtype x mask form with the fields
  kernel, config, dtype, mask_form, arch, shared_bytes, shared_limit,
  registers, spill_bytes, wgmma, mma_sync, wait0_in_loop
(+ shared_estimate, smem_stores_in_loop, ok, violations, ...). Exits
non-zero when a surviving config breaks a rule.

  python benchmarks/static_gpu_check.py --arch 90 --json OUT.json [--markdown OUT.md]
  python benchmarks/static_gpu_check.py --arch 80 --ci     # the CI subset

``--ci``: the bf16 configs that survive pruning (search-mode scores form)
plus one uint8-, one packed-mask and one fp32 case per kernel; on sm_80
only the surviving config with the largest shared-memory estimate per
kernel and dtype. The default is the full sweep.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# BERT-base training launch: 4096 tokens (32 x 128), 768 x 768 weights.
TOKENS, OUT_F, IN_F = 4096, 768, 768
GEMM_KERNELS = ("masked_matmul_fwd", "masked_matmul_grad_input", "masked_matmul_grad_weight")


def _setup_env(cache_dir: str) -> None:
    os.environ.pop("TRITON_INTERPRET", None)
    os.environ["TRITON_CACHE_DIR"] = cache_dir  # fresh: every compile runs ptxas
    os.environ.setdefault("TAMT_AUTOTUNE", "full")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


# ----------------------------------------------------------------- launches
def _kernel_modules():
    """The kernel modules (by module path: tamt.kernels re-exports functions
    under the same names as some modules)."""
    import importlib

    return tuple(importlib.import_module(f"tamt.kernels.{m}") for m in
                 ("_common", "masked_matmul", "masked_matmul_grad_input", "masked_matmul_grad_weight", "mask_build"))


def _capture_launches(fn):
    """Run ``fn`` with tamt.kernels' launch() replaced by a recorder."""
    common, fw, gi, gw, mb = _kernel_modules()
    calls = []

    def record(kernel, grid, args, kwargs, config=None):
        calls.append((kernel, args, dict(kwargs)))

    mods = (common, fw, gi, gw, mb)
    saved = [(m, m.launch, getattr(m, "check_device", None)) for m in mods]
    try:
        for m in mods:
            m.launch = record
            if hasattr(m, "check_device"):
                m.check_device = lambda *t: None
        fn()
    finally:
        for m, launch, cd in saved:
            m.launch = launch
            if cd is not None:
                m.check_device = cd
    return calls


def _jit_fn(kernel):
    from triton.runtime.jit import JITFunction

    return kernel if isinstance(kernel, JITFunction) else kernel.fn  # Autotuner -> JITFunction


def _spec(kernel, args, kwargs):
    """(signature, constexprs, attrs) as a real launch specialises them."""
    import torch

    fn = _jit_fn(kernel)
    sig, consts, attrs = {}, {}, {}
    it = iter(args)
    tl_names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
                torch.uint8: "u8", torch.int32: "i32", torch.int64: "i64", torch.bool: "u1"}
    for p in fn.params:
        if p.is_constexpr:
            if p.name in kwargs:
                consts[p.name] = kwargs[p.name]
                sig[p.name] = "constexpr"
            continue
        v = next(it)
        if isinstance(v, torch.Tensor):
            sig[p.name] = "*" + tl_names[v.dtype]
            attrs[(p.num,)] = [["tt.divisibility", 16]]  # fresh allocations are 256-byte aligned
        elif isinstance(v, bool):
            sig[p.name] = "i1"
        elif isinstance(v, int):
            if v == 1 and not p.do_not_specialize:
                sig[p.name] = "constexpr"
                consts[p.name] = 1
            else:
                sig[p.name] = "i32" if -2**31 <= v < 2**31 else "i64"
                if v % 16 == 0 and not p.do_not_specialize:
                    attrs[(p.num,)] = [["tt.divisibility", 16]]
        elif isinstance(v, float):
            sig[p.name] = "fp32"
        else:
            raise TypeError(f"{p.name}: cannot specialise {type(v)}")
    return sig, consts, attrs


def _cfg_name(c: dict) -> str:
    if "BLOCK_K" in c:
        return f"BM{c['BLOCK_M']}_BN{c['BLOCK_N']}_BK{c['BLOCK_K']}_w{c['num_warps']}_s{c['num_stages']}"
    return f"w{c['num_warps']}_s{c['num_stages']}"


def build_cases(arch: int, ci: bool) -> list[dict]:
    """Every (kernel, launch specialisation, config) to compile."""
    import torch
    import triton.language as tl

    from tamt.kernels import _configs

    _, fw, gi, gw, mb = _kernel_modules()

    limit = _configs.SHARED_LIMIT[arch]
    meta = dict(device="meta")
    M, N, K = TOKENS, OUT_F, IN_F
    cases: list[dict] = []

    def mask_kw(form, w, score_dtype=torch.float32):
        if form == "scores":
            return dict(scores=torch.empty(w.shape, dtype=score_dtype, **meta),
                        threshold=torch.empty((), dtype=score_dtype, **meta))
        if form == "uint8":
            return dict(mask=torch.empty(w.shape, dtype=torch.uint8, **meta))
        if form == "nm":  # 2:4 search: the group top-2 picked from the scores in the tile load
            return dict(scores=torch.empty(w.shape, dtype=score_dtype, **meta), nm=(2, 4))
        return dict(packed_mask=torch.empty((w.numel() + 7) // 8, dtype=torch.uint8, **meta))

    def add(kernel_name, family, dtype, form, launch_fn, extra=None, select=None, which=None):
        calls = _capture_launches(launch_fn)
        for kernel, args, kwargs in calls:
            fn = _jit_fn(kernel)
            sig, consts, attrs = _spec(kernel, args, kwargs)
            name = kernel_name if kernel is calls[0][0] else fn.__name__.strip("_").replace("_kernel", "")
            if hasattr(kernel, "configs"):  # autotuned: the configs the pruner keeps
                mode = kwargs["MASK_MODE"]
                sbytes = 4 if form in ("scores", "nm") else 2
                cfgs = _configs.surviving_configs(family, dtype, mode, limit, capability=arch, score_bytes=sbytes,
                                                  tokens=_configs.token_bucket(M), rows=None, cols=None, which=which)
                elem = torch.empty((), dtype=dtype).element_size()
                cfgs = [(dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages),
                         _configs.shared_estimate(family, c, elem, mode, sbytes)) for c in cfgs]
            else:
                cfgs = [(dict(num_warps=kwargs.get("num_warps", 4), num_stages=kwargs.get("num_stages", 3)), None)]
            if select is not None and hasattr(kernel, "configs"):
                cfgs = select(cfgs)
            for cfg, est in cfgs:
                c = dict(cfg)
                warps, stages = c.pop("num_warps"), c.pop("num_stages")
                cases.append(dict(
                    kernel=name, module=fn.__module__, fn=fn.__name__, arch=arch,
                    dtype=str(dtype).replace("torch.", ""), mask_form=form,
                    config=_cfg_name(cfg), signature=sig, constexprs={**consts, **c},
                    attrs=[[list(k), v] for k, v in attrs.items()], num_warps=warps, num_stages=stages,
                    shared_limit=limit, shared_estimate=est,
                    gemm=name in GEMM_KERNELS, **(extra or {}),
                ))

    def largest(cfgs):  # sm_80 CI: the config closest to the limit
        return [max(cfgs, key=lambda ce: ce[1] or 0)]

    def first(cfgs):
        return cfgs[:1]

    dtypes = [torch.bfloat16, torch.float16, torch.float32]
    forms = ["scores", "uint8", "packed", "nm"]
    for dtype in dtypes:
        for form in forms:
            if ci:
                if arch == 80:
                    if not ((dtype == torch.bfloat16 and form == "scores") or (dtype == torch.float32 and form == "scores")):
                        continue
                    select = largest
                elif dtype == torch.bfloat16 and form == "scores":
                    select = None
                elif (dtype == torch.bfloat16 and form in ("uint8", "packed", "nm")) or \
                        (dtype == torch.float32 and form == "uint8"):
                    select = first
                else:
                    continue
            else:
                select = None
            x = torch.empty(M, K, dtype=dtype, **meta)
            w = torch.empty(N, K, dtype=dtype, **meta)
            b = torch.empty(N, dtype=dtype, **meta)
            gy = torch.empty(M, N, dtype=dtype, **meta)
            kw = mask_kw(form, w)
            add("masked_matmul_fwd", "mm", dtype, form, lambda: fw.masked_matmul(x, w, b, **kw), select=select)
            add("masked_matmul_grad_input", "mm", dtype, form,
                lambda: gi.masked_matmul_grad_input(gy, w, **kw), select=select)
            # grad-weight: search mode (dscores, split-K with atomics) for the scores form, fine-tuning
            # mode (dweight, the mask read in the epilogue; 16-bit weights use the deterministic
            # partial-sum pass) for the fixed-mask forms.
            want_s = form in ("scores", "nm")
            for split in (1, 4):
                sel = select
                if ci and split == 1:  # CI: the split-K (production) variant of every config, one unsplit
                    if not (dtype == torch.bfloat16 and form == "scores"):
                        continue
                    sel = largest if arch == 80 else first
                add("masked_matmul_grad_weight", "gw", dtype, form,
                    lambda: gw.masked_matmul_grad_weight(gy, x, w, **kw, want_scores=want_s, want_weight=not want_s,
                                                         split_k=split, deterministic=False),
                    extra=dict(split=split), select=sel)
    # TAMT_AUTOTUNE=off (one mid-size config, what the GPU test suites and users who skip autotuning
    # run) at the aligned training shape: the same loop rules as the autotuned configs.
    if not ci or arch == 90:
        for form in ("scores", "uint8"):
            x = torch.empty(M, K, dtype=torch.bfloat16, **meta)
            w = torch.empty(N, K, dtype=torch.bfloat16, **meta)
            b = torch.empty(N, dtype=torch.bfloat16, **meta)
            gy = torch.empty(M, N, dtype=torch.bfloat16, **meta)
            kw = mask_kw(form, w)
            ex = dict(autotune="off")
            add("masked_matmul_fwd", "mm", torch.bfloat16, form, lambda: fw.masked_matmul(x, w, b, **kw),
                extra=ex, which="off")
            add("masked_matmul_grad_input", "mm", torch.bfloat16, form,
                lambda: gi.masked_matmul_grad_input(gy, w, **kw), extra=ex, which="off")
            add("masked_matmul_grad_weight", "gw", torch.bfloat16, form,
                lambda: gw.masked_matmul_grad_weight(gy, x, w, **kw, want_scores=form == "scores",
                                                     want_weight=form != "scores", split_k=3, deterministic=False),
                extra=dict(ex, split=3), which="off")
    # The GPU test suites' launches: TAMT_AUTOTUNE=off (one config) on ragged
    # shapes, i.e. without the divisibility hints; packed rows (K % 8 == 0)
    # and the per-element bit gather (K % 8 != 0).
    if not (ci and arch == 80):
        # fp64 (tests, reference runs) must compile for the GPU at all: Triton 3.6's tl.dot
        # wants out_dtype=float64 for an fp64 accumulator, which the interpreter never checks.
        # odd sizes (all three odd): every row of every operand, and the wrap of a
        # tile past the edge, lands on any element boundary, so a vector global
        # access wider than one element is a misaligned address waiting for a GPU
        # (rule odd_sizes below; the fp32 forward with a bias at N = 123 failed so).
        for (m_, n_, k_), form, dt in (((300, 520, 200), "scores", torch.bfloat16),
                                       ((300, 520, 200), "packed", torch.bfloat16),
                                       ((37, 33, 77), "packed", torch.bfloat16),
                                       ((5, 123, 77), "scores", torch.float32),
                                       ((5, 123, 77), "scores", torch.float64)):
            x = torch.empty(m_, k_, dtype=dt, **meta)
            w = torch.empty(n_, k_, dtype=dt, **meta)
            b = torch.empty(n_, dtype=dt, **meta)
            gy = torch.empty(m_, n_, dtype=dt, **meta)
            kw = mask_kw(form, w)
            odd = all(v % 2 for v in (m_, n_, k_))
            ex = dict(shape=f"{m_}x{n_}x{k_}", aligned=False, odd_sizes=odd)
            add("masked_matmul_fwd", "mm", dt, form, lambda: fw.masked_matmul(x, w, b, **kw),
                extra=ex, which="off")
            add("masked_matmul_grad_input", "mm", dt, form,
                lambda: gi.masked_matmul_grad_input(gy, w, **kw), extra=ex, which="off")
            add("masked_matmul_grad_weight", "gw", dt, form,
                lambda: gw.masked_matmul_grad_weight(gy, x, w, **kw, want_scores=True, want_weight=True, split_k=3),
                extra=dict(ex, split=3), which="off")
    # the per-step mask pass
    s = torch.empty(N, K, dtype=torch.float32, **meta)
    thr = torch.empty((), dtype=torch.float32, **meta)
    wb = torch.empty(N, K, dtype=torch.bfloat16, **meta)
    for form in mb.FORMS:
        if ci and arch == 80:
            continue
        add("binarize_" + form, None, torch.float32, form, lambda: mb.binarize(s, thr, form, weight=wb))
    # the segmented radix select (thresholds): fixed launch parameters
    if not (ci and arch == 80):
        import importlib

        sk = importlib.import_module("tamt.kernels.segmented_kth")

        hist_sig = dict(data_ptr="*fp32", chunk_seg_ptr="*i32", chunk_start_ptr="*i64", seg_end_ptr="*i64",
                        prefix_ptr="*i64", hist_ptr="*i32", nan_ptr="*i32")
        for first, bits in ((True, 32), (False, 32), (True, 64)):
            consts = dict(KEY_DTYPE=tl.uint64 if bits == 64 else tl.uint32,
                          FLOAT_DTYPE=tl.float64 if bits == 64 else tl.float32, SIGN_SHIFT=bits - 1,
                          SHIFT=bits - 8 if first else bits - 16, DIGIT_BITS=8, FIRST=first, NBINS=256,
                          CHUNK=65536, BLOCK=4096)
            sig = dict(hist_sig, data_ptr="*fp64" if bits == 64 else "*fp32")
            case = _manual_case(sk._seg_hist_kernel, arch, limit, "seg_hist" + ("_first" if first else ""),
                                sig, consts, warps=8, stages=3)
            case["dtype"] = "float64" if bits == 64 else "float32"
            cases.append(case)
        cases.append(_manual_case(sk._pick_digit_kernel, arch, limit, "pick_digit",
                                  dict(hist_ptr="*i32", k_rem_ptr="*i64", prefix_ptr="*i64"),
                                  dict(DIGIT_BITS=8, NBINS=256), warps=4, stages=1))
    # dedupe (the reduce kernel is captured by several grad-weight launches)
    seen, out = set(), []
    for c in cases:
        key = json.dumps({k: c[k] for k in ("kernel", "signature", "constexprs", "attrs", "num_warps", "num_stages")},
                         sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def _manual_case(fn, arch, limit, name, sig, consts, warps, stages) -> dict:
    return dict(kernel=name, module=fn.__module__, fn=fn.__name__, arch=arch, dtype="float32", mask_form="-",
                config=f"w{warps}_s{stages}", signature={**sig, **{k: "constexpr" for k in consts}},
                constexprs=consts, attrs=[[[i], [["tt.divisibility", 16]]] for i in range(len(sig))],
                num_warps=warps, num_stages=stages, shared_limit=limit, shared_estimate=None, gemm=False)


# ----------------------------------------------------------------- compile
def _main_loop(ptx: str) -> list[str]:
    """Lines of the loop with the most MMA/FMA instructions (the K-loop)."""
    lines = ptx.splitlines()
    labels = {}
    for i, line in enumerate(lines):
        m = re.match(r"^\s*(\$\w+):", line)
        if m:
            labels[m.group(1)] = i
    best, best_n = [], -1
    for i, line in enumerate(lines):
        m = re.search(r"\bbra(?:\.uni)?\s+(\$\w+);", line)
        if m and m.group(1) in labels and labels[m.group(1)] < i:
            body = lines[labels[m.group(1)]: i + 1]
            n = sum(("wgmma.mma_async" in b) or ("mma.sync" in b) or ("fma.rn.f32" in b) or ("fma.rn.f64" in b)
                    for b in body)
            if n > best_n:
                best, best_n = body, n
    return best


def vector_global_accesses(ptx: str, max_bytes: int = 4) -> list[str]:
    """Global loads/stores/async copies that move more than ``max_bytes`` in one
    instruction (``ld/st.global.v2/.v4``, ``cp.async`` of 8 or 16 bytes). With odd
    sizes nothing wider than one element (4 bytes; 8 for fp64) is aligned for sure."""
    out = []
    for m in re.finditer(r"\b(?:ld|st)\.global(?:\.\w+)*?\.v([248])(?:\.\w+)*?\.[bfsu](8|16|32|64)\b", ptx):
        if int(m.group(1)) * int(m.group(2)) // 8 > max_bytes:
            out.append(m.group(0))
    for m in re.finditer(r"cp\.async\.c[ag]\.shared\.global(?:\.\w+)*\s+\[[^\]]*\],\s*\[[^\]]*\],\s*(0x[0-9a-fA-F]+|\d+)", ptx):
        if int(m.group(1), 0) > max_bytes:
            out.append(f"cp.async {int(m.group(1), 0)} B")
    return out


def _ptxas_stats(log: str) -> tuple[int, int]:
    regs = [int(v) for v in re.findall(r"Used (\d+) registers", log)]
    spills = [int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)]
    return (max(regs) if regs else -1), (max(spills) if spills else -1)


def compile_case(case: dict) -> dict:
    import importlib

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    try:
        triton.knobs.nvidia.dump_ptxas_log = True
    except AttributeError:  # older Triton
        os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
    mod = importlib.import_module(case["module"])
    fn = _jit_fn(getattr(mod, case["fn"]))
    consts = dict(case["constexprs"])
    sig = dict(case["signature"])
    attrs = {tuple(k): v for k, v in case["attrs"]}
    rec = {k: case[k] for k in ("kernel", "config", "dtype", "mask_form", "arch", "shared_limit", "shared_estimate")}
    rec.update(split=case.get("split"), shape=case.get("shape", f"{TOKENS}x{OUT_F}x{IN_F}"),
               aligned=case.get("aligned", True), odd_sizes=case.get("odd_sizes", False),
               triton=triton.__version__)
    t0 = time.time()
    out = io.StringIO()
    try:
        src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
        with contextlib.redirect_stdout(out):
            k = triton.compile(src, target=GPUTarget("cuda", case["arch"], 32),
                               options=dict(num_warps=case["num_warps"], num_stages=case["num_stages"]))
    except Exception as exc:  # a compile failure is a finding, not a crash of the check
        rec.update(ok=False, violations=[f"compile failed: {type(exc).__name__}: {str(exc)[:400]}"],
                   compile_s=round(time.time() - t0, 2))
        return rec
    ptx = k.asm["ptx"]
    regs, spills = _ptxas_stats(out.getvalue())
    loop = _main_loop(ptx)
    rec.update(
        shared_bytes=int(k.metadata.shared), registers=regs, spill_bytes=spills,
        wgmma=ptx.count("wgmma.mma_async"), mma_sync=ptx.count("mma.sync"),
        wait0_in_loop=any(re.search(r"wgmma\.wait_group\.sync\.aligned\s+0;", b) for b in loop),
        smem_stores_in_loop=sum("st.shared" in b for b in loop),
        compile_s=round(time.time() - t0, 2),
    )
    v = []
    if rec["shared_bytes"] > case["shared_limit"]:
        v.append(f"shared memory {rec['shared_bytes']} B > limit {case['shared_limit']} B")
    if spills != 0:
        v.append(f"local-memory spills: {spills} B" if spills > 0 else "no ptxas -v report")
    # Unaligned sizes (no divisibility hints) cannot use asynchronous copies, so
    # Triton does not pipeline them: the loop rules are about the aligned
    # training launches; unaligned ones must compile, fit and not spill.
    if case["gemm"] and case["arch"] == 90 and case["dtype"] in ("bfloat16", "float16") and case.get("aligned", True):
        if rec["wgmma"] == 0:
            v.append("no wgmma on sm_90")
        if rec["wait0_in_loop"]:
            v.append("wgmma.wait_group 0 inside the main K-loop")
    if case.get("odd_sizes"):
        vec = vector_global_accesses(ptx, 8 if case["dtype"] == "float64" else 4)
        rec["vector_global"] = len(vec)
        if vec:
            v.append(f"odd sizes but {len(vec)} vector global accesses ({sorted(set(vec))[:3]}): misaligned on a GPU")
    rec.update(ok=not v, violations=v)
    return rec


def _worker_init(cache_dir: str) -> None:
    _setup_env(cache_dir)


def markdown(records: list[dict]) -> str:
    import triton

    arch = records[0]["arch"] if records else "?"
    lines = [
        f"# Static GPU check, sm_{arch} (Triton {triton.__version__}, no GPU)",
        "",
        f"`python benchmarks/static_gpu_check.py --arch {arch}`: every Triton kernel x every autotune config that "
        "survives pruning, compiled with a BERT-base training launch's specialisation (4096 tokens, 768 x 768; "
        "pointers 16-byte aligned, sizes divisible by 16). Rules: shared memory <= the opt-in limit, no spills "
        "(`ptxas -v`), and for the 16-bit GEMMs on sm_90 `wgmma` with no `wgmma.wait_group 0` in the main K-loop. "
        f"**{sum(r['ok'] for r in records)}/{len(records)} cases pass.** "
        "Scores are fp32 in every form (as the modules keep them); grad-weight runs search mode (dscores) for "
        "the scores form and fine-tuning mode (dweight, the mask read in the epilogue) for uint8/packed; "
        "split 4 = split-K over tokens (atomics for fp32 outputs, the deterministic two-pass sum for 16-bit). "
        "Rows with a shape in brackets are the GPU test suites' launches (TAMT_AUTOTUNE=off, ragged sizes without "
        "divisibility hints): Triton does not pipeline unaligned loads, so only the compile, shared-memory and "
        "spill rules apply to them.",
        "",
        "`st.shared in loop` counts shared-memory stores inside the K-loop: 0 means the masked W tile goes "
        "straight from the pipelined shared-memory loads into the registers of `wgmma`'s A operand; > 0 means "
        "it is stored back to shared memory once per K-step (pipelined, no `wait_group 0`).",
        "",
    ]
    gem = [r for r in records if r["kernel"].startswith("masked_matmul") and r["dtype"] in ("bfloat16", "float16")
           and r.get("aligned", True)]
    if gem:
        mma = "wgmma" if arch == 90 else "mma_sync"
        lines += [f"| kernel | mask form | 16-bit cases (bf16, fp16) | {mma.replace('_', '.')} "
                  "| wait_group 0 in loop | masked tile re-stored |",
                  "|---|---|---|---|---|---|"]
        for kern in GEMM_KERNELS:
            for form in ("scores", "uint8", "packed"):
                sel = [r for r in gem if r["kernel"] == kern and r["mask_form"] == form and "wgmma" in r]
                if sel:
                    lines.append(
                        f"| {kern} | {form} | {len(sel)} | {'yes' if all(r[mma] > 0 for r in sel) else 'no'} "
                        f"| {'none' if not any(r['wait0_in_loop'] for r in sel) else 'YES'} "
                        f"| {'yes' if any(r['smem_stores_in_loop'] for r in sel) else 'no'} |")
        lines.append("")
    lines += ["| kernel | dtype | mask form | config | smem B (estimate) | limit | regs | spill B | wgmma | mma.sync "
              "| wait 0 in loop | st.shared in loop | ok |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        est = f" ({r['shared_estimate']})" if r.get("shared_estimate") else ""
        lines.append(
            f"| {r['kernel']}{'' if not r.get('split') else ' split ' + str(r['split'])}"
            f"{'' if r.get('shape', '4096x768x768') == '4096x768x768' else ' (' + r['shape'] + ')'} | {r['dtype']} "
            f"| {r['mask_form']} | {r['config']} | {r.get('shared_bytes', '-')}{est} | {r['shared_limit']} "
            f"| {r.get('registers', '-')} | {r.get('spill_bytes', '-')} | {r.get('wgmma', '-')} "
            f"| {r.get('mma_sync', '-')} | {r.get('wait0_in_loop', '-')} | {r.get('smem_stores_in_loop', '-')} "
            f"| {'yes' if r['ok'] else 'NO: ' + '; '.join(r['violations'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, choices=(80, 90), help="compute capability to compile for")
    ap.add_argument("--json", default=None, help="write one record per case to this JSON file")
    ap.add_argument("--markdown", default=None, help="also write a Markdown table")
    ap.add_argument("--ci", action="store_true", help="the CI subset (see above); default: full sweep")
    ap.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1), help="parallel compiles")
    ap.add_argument("--list", action="store_true", help="list the cases, compile nothing")
    args = ap.parse_args(argv)

    cache = tempfile.mkdtemp(prefix="tamt-static-check-")
    _setup_env(cache)
    try:
        import triton  # noqa: F401
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except Exception as exc:
        print(f"static_gpu_check: needs triton with the NVIDIA backend (pip install triton): {exc}", file=sys.stderr)
        return 2
    cases = build_cases(args.arch, args.ci)
    if args.list:
        for c in cases:
            print(c["kernel"], c["dtype"], c["mask_form"], c["config"], c.get("split"))
        print(f"{len(cases)} cases")
        return 0
    t0 = time.time()
    print(f"compiling {len(cases)} kernel x config cases for sm_{args.arch} with {args.jobs} jobs ...", flush=True)
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, initializer=_worker_init, initargs=(cache,)) as ex:
            records = list(ex.map(compile_case, cases))
    else:
        records = [compile_case(c) for c in cases]
    bad = [r for r in records if not r["ok"]]
    for r in records:
        flag = "ok " if r["ok"] else "BAD"
        shape = "" if r.get("shape") == f"{TOKENS}x{OUT_F}x{IN_F}" else f" [{r.get('shape')}]"
        print(f"{flag} {r['kernel'] + shape:28s} {r['dtype']:8s} {r['mask_form']:6s} {r['config']:28s} "
              f"smem {r.get('shared_bytes', '-'):>6} (est {r.get('shared_estimate') or '-'}) regs {r.get('registers', '-'):>3} spill {r.get('spill_bytes', '-')} "
              f"wgmma {r.get('wgmma', '-')} wait0 {r.get('wait0_in_loop', '-')} st.shared/loop "
              f"{r.get('smem_stores_in_loop', '-')}" + ("" if r["ok"] else "  <- " + "; ".join(r["violations"])))
    print(f"{len(records) - len(bad)}/{len(records)} pass in {time.time() - t0:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=1) + "\n")
        print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(markdown(records))
        print(f"wrote {args.markdown}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
