"""Speed benchmarks: how fast a stage runs (rows/min, updates/s, queries/s, ms per call)."""
