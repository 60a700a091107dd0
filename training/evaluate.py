"""``python -m training.evaluate``: the evaluation command line (see :mod:`training.eval.cli`)."""

import sys

from training.eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
