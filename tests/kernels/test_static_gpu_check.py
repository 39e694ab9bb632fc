"""Static GPU checks in CI, no GPU: benchmarks/static_gpu_check.py --ci
compiles the bf16 configs that survive pruning plus one uint8, one packed
and one fp32 case per kernel for sm_90 (and the riskiest configs for
sm_80) with a training launch's specialisation, and fails on shared memory
over the limit, local-memory spills, or (16-bit GEMMs on sm_90) no wgmma /
a wgmma.wait_group 0 inside the main K-loop."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "static_gpu_check.py"
FIELDS = {"kernel", "config", "dtype", "mask_form", "arch", "shared_bytes", "shared_limit", "registers",
          "spill_bytes", "wgmma", "mma_sync", "wait0_in_loop"}


def _load_script():
    spec = importlib.util.spec_from_file_location("static_gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _nvidia_backend() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return Path(get_ptxas(90).path).exists()
    except Exception:
        return False


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _nvidia_backend(), reason="triton wheel without the NVIDIA backend / bundled ptxas")
@pytest.mark.skipif(_has_cuda(), reason="CPU-only check; on a GPU machine gpu_suite.sh runs the script itself")
@pytest.mark.parametrize("arch", [90, 80])
def test_static_gpu_check_ci_subset(arch, tmp_path):
    out = tmp_path / f"sm{arch}.json"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TAMT_AUTOTUNE")}
    r = subprocess.run([sys.executable, str(SCRIPT), "--arch", str(arch), "--ci", "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    recs = json.loads(out.read_text())
    assert recs and all(FIELDS <= set(rec) and rec["ok"] for rec in recs)
    kernels = {rec["kernel"] for rec in recs}
    assert {"masked_matmul_fwd", "masked_matmul_grad_input", "masked_matmul_grad_weight"} <= kernels
    assert {rec["dtype"] for rec in recs} >= {"bfloat16", "float32"}
    for rec in recs:
        assert rec["shared_bytes"] <= rec["shared_limit"] and rec["spill_bytes"] == 0
    if arch == 90:
        assert {"packed", "uint8", "scores"} <= {rec["mask_form"] for rec in recs}
        gemm16 = [rec for rec in recs if rec["kernel"].startswith("masked_matmul") and rec["dtype"] == "bfloat16"
                  and rec["aligned"]]
        assert gemm16 and all(rec["wgmma"] > 0 and not rec["wait0_in_loop"] for rec in gemm16)
        # the uint8 form keeps the masked W tile in registers: no shared-memory store in the K-loop
        u8 = [rec for rec in gemm16 if rec["mask_form"] == "uint8" and rec["kernel"] != "masked_matmul_grad_weight"]
        assert u8 and all(rec["smem_stores_in_loop"] == 0 for rec in u8)


PTX = """
.visible .entry k(
{
$L__BB0_1:
\twgmma.fence.sync.aligned;
\twgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%r1}, {%r2}, %rd1, %p1, 1, 1, 0;
\twgmma.commit_group.sync.aligned;
\twgmma.wait_group.sync.aligned %WAIT%;
\tst.shared.v4.b32 [%r3], {%r4, %r5, %r6, %r7};
\t@%p2 bra \t$L__BB0_1;
\twgmma.wait_group.sync.aligned 0;
\tret;
}
"""


def test_ptx_loop_rules_can_fail():
    m = _load_script()
    for wait, expect in (("0", True), ("1", False)):
        loop = m._main_loop(PTX.replace("%WAIT%", wait))
        assert any("wgmma.mma_async" in line for line in loop)
        assert any(__import__("re").search(r"wgmma\.wait_group\.sync\.aligned\s+0;", b) for b in loop) is expect
        assert sum("st.shared" in b for b in loop) == 1  # the final wait 0 after the loop is not counted
    log = ("ptxas info    : Function properties for k\n    16 bytes stack frame, 16 bytes spill stores, "
           "12 bytes spill loads\nptxas info    : Used 72 registers, used 1 barriers\n")
    assert m._ptxas_stats(log) == (72, 28)


def test_vector_global_access_rule_can_fail():
    """The odd-size rule sees the 16-byte bias load that misaligned on an H200 (fp32, N = 123),
    a 16-byte cp.async, and lets 4-byte scalar accesses pass."""
    m = _load_script()
    bad = ("\tld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd5 + 0 ];\n"
           "\tcp.async.cg.shared.global [ %r9 + 0 ], [ %rd7 + 0 ], 0x10, %r8;\n")
    ok = ("\tld.global.b32 { %r1 }, [ %rd5 + 0 ];\n"
          "\tcp.async.ca.shared.global [ %r9 + 0 ], [ %rd7 + 0 ], 0x4, %r8;\n"
          "\tst.global.b32 [ %rd2 + 0 ], { %r3 };\n")
    assert len(m.vector_global_accesses(bad)) == 2
    assert m.vector_global_accesses(ok) == []
    fp64 = "\tld.global.v2.b32 { %r1, %r2 }, [ %rd5 + 0 ];\n\tcp.async.ca.shared.global [ %r9 + 0 ], [ %rd7 + 0 ], 0x8, %r8;\n"
    assert len(m.vector_global_accesses(fp64)) == 2 and m.vector_global_accesses(fp64, max_bytes=8) == []
