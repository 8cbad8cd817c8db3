"""HAT's evolutionary search: the algorithm, its latency model, outputs and command line."""

from hat.search.evolution import (
    Candidate,
    Evolution,
    EvoSettings,
    InfeasibleError,
    Limits,
    SearchState,
)

__all__ = ["Candidate", "EvoSettings", "Evolution", "InfeasibleError", "Limits", "SearchState"]
