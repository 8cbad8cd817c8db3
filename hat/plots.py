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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    fig.savefig(tmp)
    pyplot().close(fig)
    os.replace(tmp, path)
    return path
