"""Downstream transfer: fine-tune subnetworks (fixed masks) on GLUE and SQuAD; metrics."""
from .api import FinetuneResult, finetune
from .config import PRESETS, TASKS, FinetuneConfig
from .metrics import glue_metrics, normalize_answer, squad_metrics

__all__ = ["finetune", "FinetuneConfig", "FinetuneResult", "PRESETS", "TASKS", "glue_metrics", "squad_metrics",
           "normalize_answer"]

# ``tamt.finetune`` is both this subpackage and the function (the design card's API): importing the
# subpackage binds the module to ``tamt.finetune``, so the module itself is made callable.
import sys as _sys
import types as _types


class _CallableModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        return finetune(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
