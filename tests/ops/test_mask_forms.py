"""Mask forms through the public op (every plan vs a float64 oracle with
gradients), the once-per-step mask cache, the measured auto table and the
plan choice."""
from __future__ import annotations

import json

import pytest
import torch

from tamt import ops
from tamt.ops import _backend, auto_table, mask_forms

from .test_masked_linear import _close, oracle

HAS_TRITON = _backend.triton_unavailable_reason("cuda" if torch.cuda.is_available() else "cpu") is None
PLANS = list(mask_forms.PLANS) if HAS_TRITON else ["materialize"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    mask_forms.invalidate()
    yield
    mask_forms.invalidate()


def _data(t, n, k, device, mode, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, k, generator=g).to(device).requires_grad_()
    w = torch.randn(n, k, generator=g).to(device).requires_grad_(mode != "search")
    b = torch.randn(n, generator=g).to(device).requires_grad_()
    s = torch.randn(n, k, generator=g).to(device).requires_grad_()
    tau = ops.topk_threshold(s.detach(), 0.6)
    return x, w, b, s, tau


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("shape", [(5, 123, 77), (6, 50, 40), (1, 1, 1)])
@pytest.mark.parametrize("mode", ["search", "bool", "packed"])
def test_every_plan_matches_float64_oracle(plan, shape, mode, device):
    x, w, b, s, tau = _data(*shape, device, mode, seed=sum(shape))
    m = s.detach() > tau
    kwargs = {"search": dict(scores=s, threshold=tau), "bool": dict(mask=m), "packed": dict(mask=ops.pack_mask(m))}[mode]
    grad = torch.randn(shape[0], shape[1], device=device)
    backend = "triton" if HAS_TRITON else "torch"
    with ops.use_backend(backend), ops.use_mask_form(plan):
        y = ops.masked_linear(x, w, b, **kwargs)
        y.backward(grad)
    y64, dx64, ds64, dw64, db64 = oracle(x, w, b, m, grad)
    scale = shape[2] ** 0.5 * 4
    _close(y, y64, "y", scale)
    _close(x.grad, dx64, "dX", scale)
    _close(b.grad, db64, "dBias", shape[0] ** 0.5 * 4)
    if mode == "search":
        _close(s.grad, ds64, "dScores", shape[0] ** 0.5 * 4)
        assert w.grad is None
    else:
        _close(w.grad, dw64, "dW", shape[0] ** 0.5 * 4)
        assert (w.grad[~m] == 0).all()


def _count_builds(monkeypatch):
    calls = []
    real = mask_forms._build

    def counting(form, *a, **k):
        calls.append(form)
        return real(form, *a, **k)

    monkeypatch.setattr(mask_forms, "_build", counting)
    return calls


@pytest.mark.parametrize("plan", [p for p in PLANS if p != "scores"])
def test_step_mask_built_once_per_step_and_rebuilt_on_change(plan, monkeypatch, device):
    builds = _count_builds(monkeypatch)
    x, w, b, s, tau = _data(8, 12, 16, device, "search")
    opt = torch.optim.SGD([s], lr=0.5)
    backend = "triton" if HAS_TRITON else "torch"

    def step_loss(xb):
        return ops.masked_linear(xb, w, b, scores=s, threshold=tau).square().sum()

    with ops.use_backend(backend), ops.use_mask_form(plan):
        for micro in range(3):  # three micro-batches of one step: one build
            step_loss(x.detach() + micro).backward()
        assert builds == [plan]
        opt.step()  # in-place update of the scores: version bump -> stale
        y = ops.masked_linear(x, w, b, scores=s, threshold=tau)
        assert builds == [plan, plan]
        torch.testing.assert_close(y, torch.nn.functional.linear(x, w * (s.detach() > tau), b))
        tau = ops.topk_threshold(s.detach(), 0.3)  # a new threshold tensor
        y = ops.masked_linear(x, w, b, scores=s, threshold=tau)
        assert len(builds) == 3
        torch.testing.assert_close(y, torch.nn.functional.linear(x, w * (s.detach() > tau), b))
        tau.fill_(0.0)  # in-place threshold change
        ops.masked_linear(x, w, b, scores=s, threshold=tau)
        assert len(builds) == 4
        # writes through .data bypass the version counter: documented, and invalidate() recovers
        s.data.mul_(-1)
        mask_forms.invalidate(s)
        y = ops.masked_linear(x, w, b, scores=s, threshold=tau)
        assert len(builds) == 5
        torch.testing.assert_close(y, torch.nn.functional.linear(x, w * (s.detach() > tau), b))


def test_materialized_form_follows_a_training_weight(monkeypatch, device):
    builds = _count_builds(monkeypatch)
    x, w, b, _, _ = _data(4, 6, 8, device, "fixed")
    m = torch.rand(6, 8, generator=torch.Generator().manual_seed(1)).to(device) > 0.5
    opt = torch.optim.SGD([w], lr=0.1)
    with ops.use_mask_form("materialize"):
        for _ in range(2):
            ops.masked_linear(x, w, b, mask=m).sum().backward()
            opt.step()
        y = ops.masked_linear(x, w, b, mask=m)
    assert builds == ["materialize"] * 3  # once per weight version
    torch.testing.assert_close(y, torch.nn.functional.linear(x, w * m, b))


def test_explicit_step_mask_is_what_the_op_reads(monkeypatch, device):
    builds = _count_builds(monkeypatch)
    _, w, _, s, tau = _data(2, 5, 9, device, "search")
    u8 = ops.step_mask(w, scores=s, threshold=tau, form="uint8")
    assert torch.equal(u8.bool(), s.detach() > tau)
    assert ops.step_mask(w, scores=s, threshold=tau, form="uint8") is u8
    packed = ops.step_mask(w, scores=s, threshold=tau, form="packed")
    assert torch.equal(packed, ops.pack_mask(s.detach() > tau))
    assert builds == ["uint8", "packed"]
    with pytest.raises(ValueError, match="form"):
        ops.step_mask(w, scores=s, threshold=tau, form="bits")
    with pytest.raises(ValueError, match="threshold"):
        ops.step_mask(w, scores=s, form="uint8")


def test_cache_entries_die_with_the_scores(device):
    _, w, _, s, tau = _data(2, 5, 9, device, "search")
    ops.step_mask(w, scores=s, threshold=tau, form="uint8")
    assert mask_forms.cached_count() == 1
    del s
    import gc

    gc.collect()
    assert mask_forms.cached_count() == 0


def test_traced_calls_bypass_the_cache(monkeypatch, device):
    builds = _count_builds(monkeypatch)
    _, w, _, s, tau = _data(2, 5, 9, device, "search")
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    ops.step_mask(w, scores=s, threshold=tau, form="uint8")
    ops.step_mask(w, scores=s, threshold=tau, form="uint8")
    assert builds == ["uint8", "uint8"] and mask_forms.cached_count() == 0


def test_prepare_step_masks_from_the_module_layer(monkeypatch):
    from tamt import nn as tnn

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 12), torch.nn.ReLU(), torch.nn.Linear(12, 8))
    for i in (0, 2):
        model[i] = tnn.MaskedLinear.from_linear(model[i], 0.5, mode="search")
    tnn.update_thresholds(model)
    x = torch.randn(5, 16)
    with ops.use_mask_form("materialize"):
        assert tnn.prepare_step_masks(model, tokens=5) == 2
        builds = _count_builds(monkeypatch)
        model(x).sum().backward()
        assert builds == []  # forward and backward read the prepared forms
        with torch.no_grad():
            for i in (0, 2):
                model[i].scores.add_(1e-3 * torch.randn_like(model[i].scores))
        tnn.update_thresholds(model)
        y = model(x)
        assert len(builds) == 2  # stale after the step: rebuilt once each
    ref = x
    for i, mod in enumerate(model):
        ref = torch.nn.functional.linear(ref, mod.masked_weight(), mod.bias) if i != 1 else ref.relu()
    torch.testing.assert_close(y, ref)


# ----------------------------------------------------------------- plan choice
def _table(tmp_path, entries, name="table.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"format": auto_table.FORMAT, "device_name": "Fake GPU", "entries": entries}))
    return p


def _entry(n, k, tokens, best, dtype="bfloat16"):
    return dict(out_features=n, in_features=k, tokens=tokens, dtype=dtype, best=best,
                ms={"scores": 3.0, "uint8": 2.0, "packed": 2.5, "materialize": 1.0 if best == "materialize" else 4.0})


def test_auto_table_lookup(tmp_path, monkeypatch):
    p = _table(tmp_path, [_entry(768, 768, 4096, "uint8"), _entry(768, 768, 256, "packed"),
                          _entry(3072, 768, 4096, "materialize")])
    monkeypatch.setenv(auto_table.TABLE_ENV, str(p))
    auto_table.clear_cache()
    allp = mask_forms.PLANS
    assert auto_table.lookup("Fake GPU", 768, 768, 8192, "bfloat16", allp) == "uint8"  # nearest token count
    assert auto_table.lookup("Fake GPU", 768, 768, 128, "bfloat16", allp) == "packed"
    assert auto_table.lookup("Fake GPU", 3072, 768, 4096, "bfloat16", allp) == "materialize"
    # best not allowed (explicit triton): the fastest allowed one
    assert auto_table.lookup("Fake GPU", 3072, 768, 4096, "bfloat16", mask_forms.FUSED_FORMS) == "uint8"
    assert auto_table.lookup("Fake GPU", 1024, 768, 4096, "bfloat16", allp) is None  # shape not measured
    assert auto_table.lookup("Fake GPU", 768, 768, 4096, "float32", allp) is None
    auto_table.clear_cache()


def test_plan_for_reads_the_table_on_cuda_and_defaults_elsewhere(tmp_path, monkeypatch):
    p = _table(tmp_path, [_entry(768, 768, 4096, "uint8")])
    monkeypatch.setenv(auto_table.TABLE_ENV, str(p))
    auto_table.clear_cache()
    monkeypatch.setattr(mask_forms, "_device_name", lambda device: "Fake GPU")
    cuda = torch.device("cuda", 0)
    w = torch.empty(768, 768, dtype=torch.bfloat16)
    assert mask_forms.plan_for("triton", cuda, 4000, w) == "uint8"
    assert mask_forms.plan_for("triton", cuda, 4000, torch.empty(64, 768, dtype=torch.bfloat16)) == \
        auto_table.DEFAULT_PLAN == "materialize"
    with ops.use_backend("triton"):  # explicit Triton: a fused form, default uint8
        assert mask_forms.plan_for("triton", cuda, 4000, torch.empty(64, 768, dtype=torch.bfloat16)) == "uint8"
    with ops.use_mask_form("packed"):
        assert mask_forms.plan_for("triton", cuda, 4000, w) == "packed"
    assert mask_forms.plan_for("torch", torch.device("cpu"), 10, w) == "torch"
    with ops.use_mask_form("materialize"):
        assert mask_forms.plan_for("torch", torch.device("cpu"), 10, w) == "materialize"
    auto_table.clear_cache()


def test_bad_or_missing_table_falls_back_with_a_warning(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something else"}))
    monkeypatch.setenv(auto_table.TABLE_ENV, str(bad))
    auto_table.clear_cache()
    with pytest.warns(UserWarning, match="ignoring the auto table"):
        assert auto_table.lookup("X", 768, 768, 16, "bfloat16", mask_forms.PLANS) is None
    monkeypatch.setenv(auto_table.TABLE_ENV, str(tmp_path / "missing.json"))
    auto_table.clear_cache()
    assert auto_table.lookup("X", 768, 768, 16, "bfloat16", mask_forms.PLANS) is None
    auto_table.clear_cache()
    assert auto_table.device_slug("NVIDIA H200") == "nvidia-h200"


def test_bad_mask_form_name():
    with pytest.raises(ValueError, match="unknown mask form"):
        ops.set_mask_form("bitsy")


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and HAS_TRITON), reason="needs a CUDA device and Triton")
@pytest.mark.parametrize("plan", mask_forms.PLANS)
def test_bf16_weights_fp32_scores_every_plan_gpu(plan):
    """The modules' dtypes on a GPU: each plan's error vs float64 is at most
    2x that of the unfused bf16 PyTorch path (+ a small atol)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    t, n, k = 300, 520, 200
    x = torch.randn(t, k, device="cuda", generator=g).bfloat16().requires_grad_()
    w = (torch.randn(n, k, device="cuda", generator=g) * 0.05).bfloat16()
    b = torch.randn(n, device="cuda", generator=g).bfloat16()
    s = torch.randn(n, k, device="cuda", generator=g).requires_grad_()
    tau = ops.topk_threshold(s.detach(), 0.7)
    gy = torch.randn(t, n, device="cuda", generator=g).bfloat16()
    with ops.use_backend("triton"), ops.use_mask_form(plan):
        y = ops.masked_linear(x, w, b, scores=s, threshold=tau)
        y.backward(gy)
    m = s.detach() > tau
    x16, s16 = x.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    y16 = torch.nn.functional.linear(x16, w * m.bfloat16(), b)  # unfused, same precision
    y16.backward(gy)
    ds16 = ((gy.t() @ x.detach()) * w).float()
    y64 = x.detach().double() @ (w.double() * m).t() + b.double()
    dx64 = gy.double() @ (w.double() * m)
    ds64 = (gy.double().t() @ x.detach().double()) * w.double()
    for got, same, ref, what in ((y, y16, y64, "y"), (x.grad, x16.grad, dx64, "dX"), (s.grad, ds16, ds64, "dS")):
        e_got = (got.double() - ref).abs().max().item()
        e_torch = (same.double() - ref).abs().max().item()
        assert e_got <= 2 * e_torch + 1e-2, f"{plan} {what}: err {e_got:.3g} vs torch {e_torch:.3g}"


def test_backend_auto_table_report_is_json():
    rep = _backend.auto_table()
    assert json.loads(json.dumps(rep))["gemm_plan_default"] == auto_table.DEFAULT_PLAN
    assert "gemm/cuda" in rep["preference"]


def test_prepare_step_masks_skips_nm_modules():
    """An N:M search module has no threshold to build a form from: the fused kernels select from the scores,
    the other paths build their +-1 indicator per call; prepare_step_masks leaves it alone and the module
    still computes the group top-N product under every plan."""
    from tamt import nn as tnn
    from tamt.ops.nm import nm_mask

    torch.manual_seed(0)
    lin = tnn.MaskedLinear.from_linear(torch.nn.Linear(16, 8), 0.5, mode="search")
    lin.set_structure("2:4")
    x = torch.randn(5, 16)
    ref = torch.nn.functional.linear(x, torch.where(nm_mask(lin.scores.detach(), 2, 4), lin.weight, 0), lin.bias)
    for form in ("auto", "materialize"):
        with ops.use_mask_form(form):
            assert tnn.prepare_step_masks(lin, tokens=5) == 0
            torch.testing.assert_close(lin(x), ref)
