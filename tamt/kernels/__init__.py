"""Triton kernels of tamt (imported as ``tamt.kernels``).

The kernel sources live in the repository's top-level ``kernels/`` folder
(design card); every module there has a relative symlink here, so that
``tamt.kernels`` is an ordinary package for Python, editable installs, wheels,
IDEs and type checkers alike. ``kernels/`` itself has no ``__init__.py`` on
purpose: a regular top-level package named ``kernels`` in the repository would
shadow Hugging Face's ``kernels`` package (which transformers imports) for
anything run from the repository root. A new kernel module: add it to
``kernels/`` and link it here (``tests/test_packaging.py`` checks both).

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
import os

# Triton 3.9 warns once per process that its default for fusing a*b+c into an FMA will
# flip in 3.10; the kernels' error bounds and the static check were measured with fusion
# on (the default of every Triton so far), so keep it on explicitly (a user's setting wins).
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

from .masked_matmul import masked_matmul, masked_matmul_reference  # noqa: E402
from .masked_matmul_grad_input import masked_matmul_grad_input, masked_matmul_grad_input_reference  # noqa: E402
from .masked_matmul_grad_weight import masked_matmul_grad_weight, masked_matmul_grad_weight_reference  # noqa: E402
from .mask_build import binarize, binarize_reference  # noqa: E402
from .segmented_kth import segmented_kth_smallest, segmented_kth_smallest_reference  # noqa: E402

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
