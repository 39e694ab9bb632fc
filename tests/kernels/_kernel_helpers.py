"""Shared helpers of the kernel tests (plain torch, independent of kernels/)."""
from __future__ import annotations

import torch


def pack_bits(m: torch.Tensor) -> torch.Tensor:
    """Little bit order: element i of the flattened mask is bit (i & 7) of byte (i >> 3)."""
    flat = m.reshape(-1).to(torch.int64)
    n = flat.numel()
    idx = torch.arange(n, device=flat.device)
    out = torch.zeros((n + 7) // 8, dtype=torch.int64, device=flat.device)
    out.index_add_(0, idx >> 3, flat << (idx & 7))
    return out.to(torch.uint8)


def mask_kwargs(form: str, scores: torch.Tensor, threshold: torch.Tensor) -> dict:
    m = scores > threshold
    if form == "scores":
        return dict(scores=scores, threshold=threshold)
    if form == "bool":
        return dict(mask=m)
    if form == "uint8":
        return dict(mask=m.to(torch.uint8))
    if form == "packed":
        return dict(packed_mask=pack_bits(m))
    raise ValueError(form)


def max_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return (a.double() - ref.double()).abs().max().item()


def fp32_sum_allowance(abs_products: torch.Tensor, terms: int) -> float:
    """The typical rounding error of a ``terms``-long fp32 sum taken in some order:
    sqrt(terms) * 2**-24 * (sum of |products|).  A GEMM kernel that accumulates
    sequentially along K (Triton's FMA dot) and cuBLAS (blocked / split
    reductions) round differently; on an H200 the kernel's error at K = 769
    was 2.9e-5 against cuBLAS's 6.1e-6, i.e. about one ulp of the absolute sum
    (~490), while a wrong mask entry or a misread element costs O(1)."""
    return float(terms) ** 0.5 * 2.0 ** -24 * float(abs_products.abs().max())


def assert_close_2x(out: torch.Tensor, same_precision_torch: torch.Tensor, ref64: torch.Tensor, atol: float,
                    allowance: float = 0.0) -> None:
    """flash-attention's rule: the kernel's error vs the float64 reference is
    at most 2x that of the same-precision PyTorch implementation (+ atol for
    the cases where PyTorch happens to be exact, + ``allowance`` for a long
    reduction summed in another order, see ``fp32_sum_allowance``)."""
    assert out.shape == ref64.shape, (out.shape, ref64.shape)
    assert torch.isfinite(out.double()).all() or not torch.isfinite(ref64).all()
    e_kernel = max_err(out, ref64)
    e_torch = max_err(same_precision_torch, ref64)
    bound = 2 * e_torch + atol + allowance
    assert e_kernel <= bound, (f"kernel err {e_kernel:.3e} > 2 x torch err {e_torch:.3e} + {atol:.1e}"
                               f" + allowance {allowance:.1e}")
