"""Fast generation for found models: fairseq's beam search over a static key/value cache
(:mod:`hat.generate.beam`). On a CPU it runs eagerly and gives fairseq ``SequenceGenerator``'s
hypotheses; every tensor keeps its shape from step to step, so on a GPU a decode step can be
replayed as a CUDA graph."""

from hat.generate.beam import BeamSettings, BeamState, StaticBeamSearch
from hat.generate.graph import GraphBeamSearch

__all__ = ["BeamSettings", "BeamState", "GraphBeamSearch", "StaticBeamSearch"]
