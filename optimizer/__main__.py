"""``python -m optimizer`` is ``moa-opt``."""

from __future__ import annotations

import sys

from optimizer.cli import main

sys.exit(main())
