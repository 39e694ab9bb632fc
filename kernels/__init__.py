"""Triton kernels of tamt (imported as ``tamt.kernels``).

One file per fused op, each with its host wrapper and a plain PyTorch
reference next to it:
  * masked_matmul              y  = x @ (W*M)^T + b
  * masked_matmul_grad_input   dx = grad_out @ (W*M)
  * masked_matmul_grad_weight  G = grad_out^T @ x in registers (split-K over
                               tokens); epilogue writes dscores = G*W and/or
                               dweight = G*M
  * mask_build.binarize        (scores, threshold) -> uint8 / bit-packed
                               mask or W*M, once per optimizer step
  * segmented_kth_smallest     per-segment k-th smallest (torch.kthvalue
                               semantics) by a multi-block radix select

On a machine without a GPU, set TRITON_INTERPRET=1 before importing this
package to run the kernels on CPU tensors (slow; for tests).
"""
from .masked_matmul import masked_matmul, masked_matmul_reference
from .masked_matmul_grad_input import masked_matmul_grad_input, masked_matmul_grad_input_reference
from .masked_matmul_grad_weight import masked_matmul_grad_weight, masked_matmul_grad_weight_reference
from .mask_build import binarize, binarize_reference
from .segmented_kth import segmented_kth_smallest, segmented_kth_smallest_reference

__all__ = [
    "binarize",
    "binarize_reference",
    "masked_matmul",
    "masked_matmul_reference",
    "masked_matmul_grad_input",
    "masked_matmul_grad_input_reference",
    "masked_matmul_grad_weight",
    "masked_matmul_grad_weight_reference",
    "segmented_kth_smallest",
    "segmented_kth_smallest_reference",
]
