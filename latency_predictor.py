#!/usr/bin/env python
"""Train (or evaluate) a latency predictor from a latency-dataset CSV.

    python latency_predictor.py --configs=configs/wmt14.en-de/latency_predictor/gpu_titanxp.yml
    python latency_predictor.py --configs=... --eval-only --ckpt-path hat.pt --json
    python latency_predictor.py --configs=... --fewshot 50 --source-ckpt other_device.pt
    python latency_predictor.py --configs=... --fewshot 50 --source-dataset other_device_all.csv

(hat/latency/predict/cli.py)
"""

import sys

from hat.latency.predict.cli import main, run  # noqa: F401 - run: the library call

if __name__ == "__main__":
    sys.exit(main())
