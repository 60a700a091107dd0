"""``python -m training.corpus``: see :mod:`training.corpus.build`."""

import sys

from training.corpus.build import main

sys.exit(main())
