"""Compile the Triton kernels for NVIDIA targets (sm_80, sm_90) without a GPU:
catches code that the interpreter accepts but the GPU compiler rejects.
Run in a subprocess WITHOUT TRITON_INTERPRET (see test_kernel_aot_compile.py).
"""
import os
import sys

os.environ.pop("TRITON_INTERPRET", None)
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, sys.argv[1])
import tamt.kernels  # noqa: E402,F401

F = sys.modules["tamt.kernels.masked_matmul"]
GW = sys.modules["tamt.kernels.masked_matmul_grad_weight"]
SK = sys.modules["tamt.kernels.segmented_kth"]


def comp(fn, sig, consts, cap, warps=8, stages=3):
    src = ASTSource(fn=fn, signature={**sig, **{k: "constexpr" for k in consts}}, constexprs=consts)
    triton.compile(src, target=GPUTarget("cuda", cap, 32), options=dict(num_warps=warps, num_stages=stages))
    print("compiled", fn.__name__, f"sm_{cap}")


for cap, dt, mode in [(90, "bf16", 0), (80, "fp32", 2), (90, "bf16", 3)]:  # 3: N:M (2:4) search
    p = f"*{dt}"
    common = dict(ACC_DTYPE=tl.float32, CMP_DTYPE=tl.float32, DOT_PREC="ieee" if dt == "fp32" else None,
                  BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, GROUP_M=8, MASK_MODE=mode,
                  NM_N=2 if mode == 3 else 0, NM_M=4 if mode == 3 else 1)
    comp(F._masked_matmul_fwd_kernel.fn,
         dict(x_ptr=p, w_ptr=p, s_ptr=p, thr_ptr=p, bits_ptr="*u8", b_ptr=p, y_ptr=p, M="i32", N="i32", K="i32"),
         dict(common, HAS_BIAS=True), cap)
    comp(GW._masked_matmul_grad_weight_kernel.fn,
         dict(g_ptr=p, x_ptr=p, w_ptr=p, s_ptr=p, thr_ptr=p, bits_ptr="*u8", ds_ptr=p, dw_ptr=p, M="i32", N="i32", K="i32"),
         dict(common, WANT_S=True, WANT_W=True), cap)
comp(SK._seg_hist_kernel,
     dict(data_ptr="*bf16", chunk_seg_ptr="*i32", chunk_start_ptr="*i64", seg_end_ptr="*i64", prefix_ptr="*i64",
          hist_ptr="*i32", nan_ptr="*i32"),
     dict(KEY_DTYPE=tl.uint32, FLOAT_DTYPE=tl.float32, SIGN_SHIFT=31, SHIFT=24, DIGIT_BITS=8, FIRST=True,
          NBINS=256, CHUNK=65536, BLOCK=4096), 90)
comp(SK._pick_digit_kernel, dict(hist_ptr="*i32", k_rem_ptr="*i64", prefix_ptr="*i64"),
     dict(DIGIT_BITS=8, NBINS=256), 90, warps=4, stages=1)
print("ALL OK")
