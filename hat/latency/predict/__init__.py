"""Predicting latency from the ten features: HAT's MLP (predictor; the network and its checks in
network, its files in predictor_file), its training recipes (fit), cost terms (costterms),
few-shot transfer to new hardware (fewshot), the neighbour drift correction along a dataset's
measurement order (drift), accuracy metrics (report) and latency_predictor.py (cli)."""
