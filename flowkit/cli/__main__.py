"""``python -m flowkit.cli``: the same command as the ``flowkit`` script."""

from __future__ import annotations

import sys

from .root import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
