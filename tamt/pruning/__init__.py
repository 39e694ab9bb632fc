"""Subnetwork search: TAMT (MLM | KD | MLM+KD), IMP, OMP and random pruning on one loop.

``tamt.search(model, method, sparsity, corpus, steps=...)`` runs a method and
returns a :class:`SearchResult`; :class:`Searcher` is the steppable loop;
``tamt.evaluate_pretraining`` measures held-out MLM/KD loss of a mask.
"""
from .api import SearchResult, build_config, evaluate_context, evaluate_pretraining, init_distributed, search
from .config import METHODS, PRESETS, SearchConfig
from .context import SearchContext, fit_head, prepare
from .searcher import Searcher

__all__ = ["search", "Searcher", "SearchConfig", "SearchResult", "evaluate_pretraining", "METHODS", "PRESETS",
           "SearchContext", "prepare", "fit_head", "build_config", "evaluate_context", "init_distributed"]
