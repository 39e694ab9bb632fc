"""python -m tamt.cli (used by torchrun: torchrun ... -m tamt.cli search ...)."""
import sys

from . import main

sys.exit(main())
