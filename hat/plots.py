"""Plot output shared by the stages: matplotlib without a screen, PNGs written atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, without matplotlib's debug logging."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before its import logs
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | os.PathLike) -> Path:
    """Tight layout, then the PNG written atomically; the figure is closed."""
    from hat.atomic import atomic_path

    path = Path(path)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        pyplot().close(fig)
    return path
