"""On a GPU the op tests check correctness on many odd shapes: one autotune
config (as in tests/kernels), not a sweep per shape. Must run before
tamt.kernels is imported."""
import os

os.environ.setdefault("TAMT_AUTOTUNE", "off")
