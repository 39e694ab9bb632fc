"""The thin module layer: masked modules and patching of Hugging Face encoders."""
from .families import ROLES, role_of
from .modules import MaskedEmbedding, MaskedLinear
from .patching import (
    SparsityReport,
    base_model,
    get_masks,
    masked_modules,
    patch_model,
    prepare_step_masks,
    set_masks,
    sparsity_report,
    unpatch_model,
    update_thresholds,
)
from .scores import SCORE_INITS, init_scores, keep_largest, magnitude_mask, random_mask, ranked_scores

__all__ = [
    "ROLES", "role_of", "MaskedLinear", "MaskedEmbedding", "SparsityReport", "base_model", "get_masks",
    "masked_modules", "patch_model", "prepare_step_masks", "set_masks", "sparsity_report", "unpatch_model",
    "update_thresholds",
    "SCORE_INITS", "init_scores", "keep_largest", "magnitude_mask", "random_mask", "ranked_scores",
]
