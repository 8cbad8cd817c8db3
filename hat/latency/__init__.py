"""Latency datasets (HAT's CSV format), the latency predictor, and few-shot fitting."""

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
