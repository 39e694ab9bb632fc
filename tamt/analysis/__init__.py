"""Analyses of subnetworks: mask comparison, result tables and reports, plots, sweeps."""
from .masks import MaskComparison, compare_masks, distance_from_omp, omp_masks_like

__all__ = ["MaskComparison", "compare_masks", "distance_from_omp", "omp_masks_like"]
