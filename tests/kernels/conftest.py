"""Kernel tests: one autotune config on a GPU (autotuning every odd test
shape would dominate the run); test_every_autotune_config_gpu checks the
full sweep explicitly. Must run before tamt.kernels is imported."""
import os

os.environ.setdefault("TAMT_AUTOTUNE", "off")
