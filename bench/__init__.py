"""Benchmarks: run each from the repository root as ``python -m bench.<name>``; shared helpers
in :mod:`bench.common`, results in ``bench/results/``."""
