"""Latency datasets (HAT's CSV format), the latency predictor, and few-shot fitting."""

from hat.latency.csvio import (
    FEATURE_NAMES,
    LatencyDataError,
    LatencyTable,
    append_rows,
    load_latency_csv,
    read_latency_table,
    read_rows,
    write_latency_csv,
)
from hat.latency.fewshot import fit_fewshot
from hat.latency.predictor import (
    FEATURE_NORM,
    LatencyMLP,
    LatencyPredictor,
    PredictorError,
    get_recipe,
    metrics,
    split_indices,
    train_predictor,
)

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
    "get_recipe",
    "load_latency_csv",
    "metrics",
    "read_latency_table",
    "read_rows",
    "split_indices",
    "train_predictor",
    "write_latency_csv",
]
