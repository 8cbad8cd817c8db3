"""Measuring latency on this machine: HAT's timing protocol and CUDA graphs (timing), reference
runs and re-measurement against noise (noise), the machine record (machine), the timed model
(model), the resumable dataset writer (dataset), its CSV and sidecar files (dataset_files) and
latency_dataset.py (cli)."""
