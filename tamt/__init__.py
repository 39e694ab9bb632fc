"""tamt: find lottery tickets in pre-trained BERT-family encoders.

``import tamt`` stays light (no transformers, datasets or triton import): the
public names below are resolved lazily on first use.
"""
from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"

# The Triton kernels live in the top-level ``kernels/`` folder (design card).
# An installed wheel ships them as ``tamt/kernels`` (pyproject package-dir);
# when tamt runs from a checkout (PYTHONPATH=.) a finder placed *last* on
# sys.meta_path resolves ``tamt.kernels`` to that folder, lazily: importing
# tamt must not import triton.
_here = Path(__file__).resolve().parent
_checkout_kernels = _here.parent / "kernels"
if (_checkout_kernels / "__init__.py").is_file():
    import importlib.abc
    import importlib.util
    import sys

    class _CheckoutKernelsFinder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "tamt.kernels":
                return None
            return importlib.util.spec_from_file_location(
                name, _checkout_kernels / "__init__.py", submodule_search_locations=[str(_checkout_kernels)]
            )

    if not any(type(f).__name__ == "_CheckoutKernelsFinder" for f in sys.meta_path):
        sys.meta_path.append(_CheckoutKernelsFinder())

# name -> module that defines it
_LAZY = {
    "ops": "tamt.ops",
    "nn": "tamt.nn",
    "set_backend": "tamt.ops",
    "get_backend": "tamt.ops",
    "MaskedLinear": "tamt.nn",
    "MaskedEmbedding": "tamt.nn",
    "patch_model": "tamt.nn",
    "unpatch_model": "tamt.nn",
    "sparsity_report": "tamt.nn",
    "update_thresholds": "tamt.nn",
    "save_mask": "tamt.masks",
    "load_mask": "tamt.masks",
    "apply_mask": "tamt.masks",
    "MaskFile": "tamt.masks",
    "search": "tamt.pruning",
    "Searcher": "tamt.pruning",
    "SearchConfig": "tamt.pruning",
    "SearchResult": "tamt.pruning",
    "evaluate_pretraining": "tamt.pruning",
    "export_subnetwork": "tamt.export",
    "load_sparse": "tamt.export",
    "finetune": "tamt.finetune",
    "FinetuneConfig": "tamt.finetune",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    try:
        modname = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'tamt' has no attribute {name!r}") from None
    mod = importlib.import_module(modname)
    value = mod if modname == f"tamt.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
