"""Latency datasets (HAT's CSV format), the latency predictor, and few-shot fitting.

Measuring is in :mod:`hat.latency.measure`, predicting in :mod:`hat.latency.predict`. Words:
**drift** is the machine's speed changing during a measurement run (clock or thermal state,
other tenants of the host), a factor shared by measurements close in time; only this is called
drift. **Noise** is the spread that no reference follows: between the timed runs of one
measurement (``std``, ``cv``) and single slow attempts (re-measured as outliers); the **noise
controls** (:class:`~hat.latency.measure.noise.NoiseControl`, the sidecar's ``noise`` section)
are all of the measurement's safeguards, against drift and noise. A **periodic reference**
(``lat-ref-every``) is the largest SubTransformer re-measured every K rows; an **interleaved
reference** (``lat-ref-interleave``) is the smallest one timed after every run of a row. Their
**correction factors** (reference baseline / latest reference, or corrected / raw) multiply a
row (CSV columns ``drift_factor_encoder/decoder``). The **neighbour correction**
(:mod:`hat.latency.predict.drift`, ``--drift-correct neighbours`` and the default recipe's
``drift_fit``) estimates drift after the fact from the rows themselves: per-row **slowdown
factors** (measured / drift-free, relative to the median row; the sidecar's ``drift``
summary) divide a row, and the drift fit's ``scale`` maps drift-free predictions back to the
measured level. Differences between machines are not drift: the search's **calibration**
(``--calibrate-latency``, one scale factor from a few measurements here) and **few-shot
transfer** (:mod:`hat.latency.predict.fewshot`, another device's predictor adapted to a few rows
measured on the new one) handle those.
"""

from hat.latency.csvio import (
    FEATURE_NAMES,
    LatencyDataError,
    LatencyTable,
    append_rows,
    load_latency_csv,
    read_latency_table,
    write_latency_csv,
)
from hat.latency.predict.fewshot import fit_fewshot
from hat.latency.predict.fit import fit_recipe, split_indices, train_predictor
from hat.latency.predict.predictor import FEATURE_NORM, LatencyMLP, LatencyPredictor, PredictorError
from hat.latency.predict.report import metrics

__all__ = [
    "FEATURE_NAMES",
    "FEATURE_NORM",
    "LatencyDataError",
    "LatencyMLP",
    "LatencyPredictor",
    "LatencyTable",
    "PredictorError",
    "append_rows",
    "fit_fewshot",
    "fit_recipe",
    "load_latency_csv",
    "metrics",
    "read_latency_table",
    "split_indices",
    "train_predictor",
    "write_latency_csv",
]
