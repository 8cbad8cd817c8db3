#!/usr/bin/env python
"""Measure a latency dataset (HAT's CSV) for the predictor on this machine's CPU or GPU.

python latency_dataset.py --configs=configs/wmt14.en-de/latency_dataset/cpu_epyc.yml
Options: --lat-dataset-path, --lat-dataset-size, --latcpu/--latgpu, --latiter, --seed, ...
(see hat/latency/). The shipped configs write under latency_dataset/measured/ (never
over the committed or fetched datasets). A killed run resumes where it stopped when started again.
"""

import sys
from collections.abc import Sequence

from hat.cli import run_cli
from hat.latency.measure.cli import main as measure_main


def main(argv: Sequence[str] | None = None) -> int:
    """Measure; a configuration or input problem prints ``error: ...`` and returns 2."""
    return run_cli(lambda: measure_main(argv))


if __name__ == "__main__":
    sys.exit(main())
