#!/usr/bin/env python
"""Measure a latency dataset (HAT's CSV) for the predictor on this machine's CPU or GPU.

python latency_dataset.py --configs=configs/wmt14.en-de/latency_dataset/cpu_epyc.yml
Options: --lat-dataset-path, --lat-dataset-size, --latcpu/--latgpu, --latiter, --seed, ...
(see hat/latency/). The shipped configs write under latency_dataset/measured/ (never
over the committed or fetched datasets). A killed run resumes where it stopped when started again.
"""

import sys
from collections.abc import Sequence

from hat.errors import HatConfigError
from hat.latency.dataset_cli import main as measure_main


def main(argv: Sequence[str] | None = None) -> int:
    """Measure; a configuration or input problem prints ``error: ...`` and returns 2."""
    try:
        return measure_main(argv)
    except HatConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
