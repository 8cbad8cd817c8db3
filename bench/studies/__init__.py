"""Research studies: whether a result holds (convergence, ranking fidelity, latency accuracy,
search quality, what a quickstart user should expect)."""
