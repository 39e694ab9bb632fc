"""benchmarks/bench_kernels.py: the GPU benchmark's code paths run on the CPU
(tiny shapes, Triton in the interpreter), and its PASS/FAIL targets and the
auto table it writes are computed correctly from measured rows."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_kernels.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_kernels", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_run_every_plan_on_cpu(tmp_path):
    pytest.importorskip("triton")
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU code-path check; on a GPU machine gpu_suite.sh runs the real benchmark")
    out = tmp_path / "k.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--interpret-kernels", "--device", "cpu",
                        "--out", str(out)], capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("TARGET UNMEASURED") == 4  # no GPU: nothing claimed
    rows = json.loads(out.read_text())["results"]
    impls = {(x["mode"], x["impl"]) for x in rows if x["kind"] == "gemm"}
    for plan in ("scores", "uint8", "packed", "materialize"):
        assert ("fwd", plan) in impls and ("step", plan) in impls
    assert {("fwd", "dense"), ("step", "unfused")} <= impls
    assert any(x["impl"].startswith("tamt.ops.topk_thresholds") for x in rows if x["kind"] == "threshold")


def _rows(ratio_fwd, ratio_step, kth_ms, topk_ms):
    rows = []
    for n, k in [(768, 768), (3072, 768), (768, 3072)]:
        base = dict(kind="gemm", model="bert-base", tokens=8192, out_features=n, in_features=k, dtype="bfloat16")
        rows += [dict(base, mode="fwd", impl="dense", ms=1.0), dict(base, mode="fwd", impl="uint8", ms=1.0 / ratio_fwd),
                 dict(base, mode="fwd", impl="scores", ms=2.0),
                 dict(base, mode="step", impl="unfused", ms=3.0), dict(base, mode="step", impl="scores", ms=2.9),
                 dict(base, mode="step", impl="materialize", ms=3.0 / ratio_step)]
    what = "bert-base 73 matrices, 85.5M scores"
    rows += [dict(kind="threshold", what=what, impl="tamt.ops.topk_thresholds (native)", ms=1.0),
             dict(kind="threshold", what=what, impl="torch.kthvalue loop", ms=kth_ms),
             dict(kind="threshold", what=what, impl="torch.topk loop", ms=topk_ms)]
    return rows


def test_targets_pass_and_fail():
    m = _load()
    ok = m.targets(_rows(0.95, 1.5, 20.0, 4.0))
    assert [t[1] for t in ok] == [True, True, True, True]
    bad = m.targets(_rows(0.8, 1.2, 5.0, 2.0))
    assert [t[1] for t in bad] == [False, False, False, False]
    assert "uint8" in ok[0][2] and "materialize" in ok[1][2]  # which plan achieved it


def test_auto_table_from_rows_is_what_auto_reads(tmp_path, monkeypatch):
    m = _load()
    from tamt.ops import auto_table, mask_forms

    table = m.auto_table_from_rows(_rows(0.95, 1.5, 20.0, 4.0), dict(device_name="Fake GPU", sm="90"))
    auto_table.validate(table)
    p = tmp_path / "t.json"
    p.write_text(json.dumps(table))
    monkeypatch.setenv(auto_table.TABLE_ENV, str(p))
    auto_table.clear_cache()
    assert auto_table.lookup("Fake GPU", 3072, 768, 8192, "bfloat16", mask_forms.PLANS) == "materialize"
    assert auto_table.lookup("Fake GPU", 3072, 768, 8192, "bfloat16", mask_forms.FUSED_FORMS) == "scores"
    auto_table.clear_cache()
