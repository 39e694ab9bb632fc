"""The native Philox dropout (csrc/cpu/dropout.cpp) against a plain-Python Philox4x32-10 written here from
the paper (checked on the Random123 known-answer vectors), its AVX2 path against its scalar path, its
statistics and its gradient; and the module layer that uses it (tamt.nn.dropout)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from tamt import _native as N

if not N.available():
    pytest.skip(f"native extension not built: {N.unavailable_reason()}", allow_module_level=True)

from tamt import _C  # noqa: E402

M0, M1, W0, W1, MASK32 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85, 0xFFFFFFFF


def philox4x32_10(ctr, key):
    c, (k0, k1) = list(ctr), key
    for _ in range(10):
        p0, p1 = M0 * c[0], M1 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & MASK32, p1 & MASK32, ((p0 >> 32) ^ c[3] ^ k1) & MASK32, p0 & MASK32]
        k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
    return c


def test_reference_philox_known_answers():
    # Random123's kat_vectors for philox4x32_10
    assert philox4x32_10((0, 0, 0, 0), (0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox4x32_10((MASK32,) * 4, (MASK32, MASK32)) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert philox4x32_10((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


def reference_keep(n: int, p: float, seed: int) -> torch.Tensor:
    """The documented layout: element i (i0 = i & ~31, j = i & 31) uses word j // 8 of the block with counter
    (i0 >> 2) + j % 8 and key (seed low, seed high); kept when the word >= round(p * 2^32)."""
    thr = max(1, round(p * 2**32)) if p > 0 else 0
    key = (seed & MASK32, (seed >> 32) & MASK32)
    keep, cache = [], {}
    for i in range(n):
        i0, j = i & ~31, i & 31
        b = (i0 >> 2) + j % 8
        if b not in cache:
            cache[b] = philox4x32_10((b & MASK32, b >> 32, 0, 0), key)
        keep.append(cache[b][j // 8] >= thr)
    return torch.tensor(keep)


def run(x, p, seed, scalar=False):
    y = torch.empty_like(x)
    _C.cpu_philox_dropout(x.data_ptr(), y.data_ptr(), x.numel(), p, seed & (2**64 - 1), scalar)
    return y


@pytest.mark.parametrize("n,p,seed", [(1, 0.5, 0), (31, 0.1, 7), (4096 + 77, 0.3, 0x123456789ABCDEF0),
                                      (3 * 4096 + 5, 0.9, 2**64 - 1)])
def test_kernel_matches_the_reference_layout(n, p, seed):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=g) + 3.0  # no zeros: a zero output means dropped
    y = run(x, p, seed)
    keep = reference_keep(n, p, seed)
    assert torch.equal(y != 0, keep)
    torch.testing.assert_close(y[keep], x[keep] * torch.tensor(1.0 / (1.0 - p), dtype=torch.float32), rtol=0,
                               atol=0)
    assert torch.equal(run(x, p, seed, scalar=True), y)  # the AVX2 path and the scalar path agree bit for bit


def test_each_element_depends_only_on_seed_and_index():
    x = torch.ones(50_000)
    a, b = run(x, 0.2, 99), run(x[:12_345].clone(), 0.2, 99)
    assert torch.equal(a[:12_345], b)  # chunking and length do not matter
    assert not torch.equal(run(x, 0.2, 100), a)  # the seed does


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_and_mean_are_right(p):
    n = 1 << 21
    y = run(torch.ones(n), p, 1234)
    dropped = (y == 0).sum().item()
    assert abs(dropped - p * n) < 6 * math.sqrt(n * p * (1 - p))
    assert abs(y.mean().item() - 1.0) < 6 * math.sqrt(p / (1 - p) / n)
    # neighbours are not correlated (the word layout interleaves blocks)
    k = (y != 0).float()
    corr = torch.corrcoef(torch.stack([k[:-1], k[1:]]))[0, 1].item()
    assert abs(corr) < 6 / math.sqrt(n)


def test_op_gradient_regenerates_the_mask():
    x = (torch.randn(7, 333) + 4).requires_grad_()
    y = N.philox_dropout(x, 0.25, 5)
    g = torch.randn_like(y)
    y.backward(g)
    keep = y.detach() != 0
    torch.testing.assert_close(x.grad, torch.where(keep, g / 0.75, torch.zeros(())), rtol=0, atol=1e-6)


def test_op_checks_and_registration():
    torch.library.opcheck(torch.ops.tamt_native.philox_dropout.default, (torch.randn(5, 9), 0.3, 11))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        N.philox_dropout(torch.randn(3), 1.0, 0)
    with pytest.raises(TypeError, match="float32"):
        N.philox_dropout(torch.randn(3, dtype=torch.float64), 0.1, 0)
    assert torch.equal(N.philox_dropout(torch.arange(5.0), 0.0, 3), torch.arange(5.0))


# ------------------------------------------------------------------ module layer
def _tiny_bert(dropout=0.1):
    import transformers as tf

    cfg = tf.BertConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    return tf.BertModel(cfg)


def _batch():
    ids = torch.randint(5, 90, (3, 17), generator=torch.Generator().manual_seed(0))
    am = torch.ones_like(ids)
    am[1, 11:] = 0
    return dict(input_ids=ids, attention_mask=am)


def test_install_swaps_dropout_and_keeps_evaluation_identical():
    from tamt.nn import dropout as D

    m = _tiny_bert()
    fast = copy.deepcopy(m)
    info = D.install(fast)
    assert info["dropout_modules"] == sum(type(x) is torch.nn.Dropout for x in m.modules()) > 0
    assert info["attention"] == [m.config._attn_implementation]
    m.eval(), fast.eval()
    torch.testing.assert_close(fast(**_batch()).last_hidden_state, m(**_batch()).last_hidden_state)
    D.uninstall(fast)
    assert fast.config._attn_implementation == m.config._attn_implementation
    assert not any(isinstance(x, D.FastDropout) for x in fast.modules())


def test_training_uses_the_kernel_reproducibly(monkeypatch):
    from tamt.nn import dropout as D

    m = _tiny_bert()
    D.install(m)
    m.train()
    calls = []
    real = N.philox_dropout
    monkeypatch.setattr(N, "philox_dropout", lambda x, p, seed: calls.append(tuple(x.shape)) or real(x, p, seed))
    torch.manual_seed(3)
    a = m(**_batch()).last_hidden_state
    torch.manual_seed(3)
    b = m(**_batch()).last_hidden_state
    assert torch.equal(a, b)
    assert (3, 2, 17, 17) in calls and (3, 17, 32) in calls  # attention probabilities and hidden states
    a.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_fast_attention_math_equals_the_original_without_dropout(monkeypatch):
    """With the dropout itself made the identity, the train-mode fast attention (eager math, additive or
    boolean masks) gives the original implementation's output: only the random stream differs."""
    from tamt.nn import dropout as D

    m = _tiny_bert(dropout=0.0)
    ref = m.eval()(**_batch()).last_hidden_state
    for cfg_impl in ("sdpa", "eager"):
        f = copy.deepcopy(m)
        f.config._attn_implementation = cfg_impl
        D.install(f)
        for mod in f.modules():  # the attention takes its dropout p from these modules
            if isinstance(mod, torch.nn.Dropout):
                mod.p = 0.5
        f.train()
        monkeypatch.setattr(D, "_dropout", lambda x, p, training=True: x)
        monkeypatch.setattr(D.FastDropout, "forward", lambda self, x: x)
        torch.testing.assert_close(f(**_batch()).last_hidden_state, ref, rtol=1e-5, atol=1e-5)
        monkeypatch.undo()
