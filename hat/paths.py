"""Where things are: the checkout's root (configs/, latency_dataset/ beside hat/) and HAT's
reference data (``$HAT_REFERENCE_DIR``; by default ``hat-reference`` in a ``shared`` folder beside
the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    """HAT's reference data folder (it may not exist: callers skip or say so)."""
    return Path(os.environ.get("HAT_REFERENCE_DIR", ROOT.parent / "shared" / "hat-reference"))
