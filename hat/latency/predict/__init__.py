"""Predicting latency from the ten features: HAT's MLP (predictor), its training recipes (fit),
cost terms (costterms), few-shot transfer to new hardware (fewshot), drift correction of a
dataset's measurement order (drift), accuracy metrics (report) and latency_predictor.py (cli)."""
