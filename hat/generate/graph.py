"""The static beam search captured as one CUDA graph per batch shape.

:class:`StaticBeamSearch` keeps every tensor's shape for the whole search, and its Python control
flow depends only on the step number, never on data; so the encoder pass and all
``max_len + 1`` decode steps can be recorded once and replayed. A replay always runs every step
(it cannot stop when all sentences are done early); the finished hypotheses are the same, since
finished sentences are masked (:meth:`StaticBeamSearch.generate` with ``early_stop=False`` is
this path's eager twin, which the CPU tests compare). Graphs are kept per (batch size, source
length, max length, padding or not).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hat.generate.beam import BeamState, StaticBeamSearch


class _Captured:
    """One recorded search: its input buffers, its state, and the graph."""

    def __init__(self, search: StaticBeamSearch, src_tokens: Tensor, src_lengths: Tensor,
                 max_len: int, has_padding: bool, warmup: int = 2) -> None:
        self.src = src_tokens.clone()
        self.lengths = src_lengths.clone()
        # decided before the capture, for every replay of this graph: the length limit and
        # whether a padding mask is applied (a batch without padding gets a graph without mask:
        # attention kernels without a mask are faster)
        start = {"max_len": max_len, "has_padding": has_padding}
        device = src_tokens.device
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(warmup):  # allocator and kernel choice settle outside the capture
                search.run_all(*search.start(self.src, self.lengths, **start))
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            st, enc = search.start(self.src, self.lengths, **start)
            search.run_all(st, enc)
            self.packed = search.pack(st)  # the hypotheses, read back in one transfer
        self.state: BeamState = st

    def replay(self, src_tokens: Tensor, src_lengths: Tensor) -> BeamState:
        self.src.copy_(src_tokens)
        self.lengths.copy_(src_lengths)
        self.graph.replay()
        return self.state


class GraphBeamSearch(StaticBeamSearch):
    """:class:`StaticBeamSearch` replayed as CUDA graphs on a GPU (eager elsewhere)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.graphs: dict[tuple[int, int, int, bool], _Captured] = {}

    def graph_key(self, src_tokens: Tensor, src_lengths: Tensor) -> tuple[int, int, int, bool]:
        """(batch size, source width, max length, padding or not): what picks the graph, read
        from the device in one transfer."""
        longest, padded = torch.stack([src_lengths.max(),
                                       src_tokens.eq(self.pad).any().long()]).tolist()
        return src_tokens.size(0), src_tokens.size(1), self.max_len(longest), bool(padded)

    @torch.inference_mode()
    def generate(self, src_tokens: Tensor, src_lengths: Tensor, early_stop: bool = True
                 ) -> list[list[dict[str, Tensor]]]:
        if src_tokens.device.type != "cuda":
            return super().generate(src_tokens, src_lengths, early_stop)
        key = self.graph_key(src_tokens, src_lengths)
        if key not in self.graphs:
            self.graphs[key] = _Captured(self, src_tokens, src_lengths, max_len=key[2],
                                         has_padding=key[3])
        captured = self.graphs[key]
        return self.results(captured.replay(src_tokens, src_lengths), captured.packed)
