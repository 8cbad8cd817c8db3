#!/usr/bin/env python
"""Measure a latency dataset (HAT's CSV) for the predictor on this machine's CPU or GPU.

python latency_dataset.py --configs=configs/wmt14.en-de/latency_dataset/cpu_epyc.yml
Options: --lat-dataset-path, --lat-dataset-size, --latcpu/--latgpu, --latiter, --seed, ...
(see hat/latency/measure.py). A killed run resumes where it stopped when started again.
"""

import sys

from hat.errors import HatConfigError
from hat.latency.measure import main

if __name__ == "__main__":
    try:
        sys.exit(main())
    except HatConfigError as e:
        sys.exit(f"error: {e}")
