"""``python -m mole_lsp`` = the ``mole-lsp`` command."""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from mole_lsp.cli import main  # noqa: E402

sys.exit(main())
