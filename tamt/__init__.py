"""tamt: find lottery tickets in pre-trained BERT-family encoders.

``import tamt`` stays light (no transformers, datasets or triton import): the
public names below are resolved lazily on first use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

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
