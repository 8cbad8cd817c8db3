"""Wall time of each decode call of a test run (``python -m hat.bleu --timing``), so that a
user can set a found model's latency limit beside what decoding real sentences takes.

A latency dataset times sentences of a fixed length (``lat-sentence-length`` decoder steps,
batch 1); real sentences vary, so the times are also kept per number of decoder steps (the
longest returned hypothesis, EOS included: the steps the search ran).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch


class DecodeClock:
    """Times decode calls, synchronizing the device before and after each."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.calls: list[dict[str, Any]] = []

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, decode: Callable[[], list[list[dict[str, Any]]]], src_len: int
            ) -> list[list[dict[str, Any]]]:
        """``decode()`` timed; returns its hypotheses."""
        self._sync()
        t0 = time.perf_counter()
        out = decode()
        self._sync()
        ms = (time.perf_counter() - t0) * 1e3
        steps = max((len(h["tokens"]) for hyps in out for h in hyps), default=0)
        self.calls.append({"ms": ms, "sentences": len(out), "src_len": src_len, "steps": steps})
        return out

    def summary(self) -> dict[str, Any]:
        """Calls, sentences, median/mean ms per call, ms per sentence, and the median ms per
        call for each number of decoder steps."""
        if not self.calls:
            return {"calls": 0}
        ms = [c["ms"] for c in self.calls]
        by_steps: dict[int, list[float]] = defaultdict(list)
        for c in self.calls:
            by_steps[c["steps"]].append(c["ms"])
        return {
            "device": str(self.device), "threads": torch.get_num_threads(),
            "calls": len(ms), "sentences": sum(c["sentences"] for c in self.calls),
            "median_ms_per_call": statistics.median(ms), "mean_ms_per_call": statistics.fmean(ms),
            "ms_per_sentence": sum(ms) / sum(c["sentences"] for c in self.calls),
            "by_steps": {str(k): {"median_ms": statistics.median(v), "calls": len(v)}
                         for k, v in sorted(by_steps.items())},
            "method": "wall time of each generate call, device synchronized before and after; "
                      "first calls include warm-up (and, with --generator graph, the capture "
                      "of each new batch shape)",
        }

    def lines(self, min_calls: int = 3) -> list[str]:
        """The summary as printed lines (steps seen in at least ``min_calls`` calls)."""
        s = self.summary()
        if not s["calls"]:
            return ["| timing: no decode calls"]
        out = [f"| timing ({s['device']}, {s['threads']} thread(s)): {s['calls']} calls, "
               f"{s['sentences']} sentences; per call median {s['median_ms_per_call']:.2f} ms, "
               f"mean {s['mean_ms_per_call']:.2f} ms; {s['ms_per_sentence']:.2f} ms per "
               "sentence"]
        rows = [f"{k}: {v['median_ms']:.2f} ms ({v['calls']})"
                for k, v in s["by_steps"].items() if v["calls"] >= min_calls]
        if rows:
            out.append("| median ms per call by decoder steps (calls): " + ", ".join(rows))
        return out
