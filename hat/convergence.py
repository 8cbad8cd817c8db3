"""When is a training converged? One rule, used to stop trainings and to judge benchmarks.

A training has converged when its best validation metric (base 2) gained less than ``bits`` over
the last ``window`` (a fraction) of its updates; best-so-far values, so that one noisy validation
neither stops a training that is still improving nor hides a plateau. ``train.py
--stop-converged-bits 0.05`` stops there (fairseq's early-stopping check is extended in
:mod:`hat.compat.fairseq_patches`); it is never judged while the window reaches into the
learning-rate warmup. The history of validations lives in ``<save-dir>/convergence.json``, so
that a resumed training decides as an uninterrupted one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hat.atomic import atomic_write_json


def gain_over_window(history: list[tuple[int, float]], window: float = 0.2) -> float | None:
    """Best loss up to ``(1 - window)`` of the updates minus the best loss so far (None with
    fewer than 3 validations or none that early)."""
    if len(history) < 3:
        return None
    last_update = history[-1][0]
    earlier = [loss for update, loss in history if update <= (1 - window) * last_update]
    return min(earlier) - min(loss for _, loss in history) if earlier else None


def is_converged(history: list[tuple[int, float]], bits: float, window: float = 0.2,
                 warmup: int = 0) -> bool:
    """Whether the gain over the last ``window`` of updates is below ``bits``; never while the
    window reaches back into the learning-rate warmup (a plateau there is not convergence)."""
    gain = gain_over_window(history, window)
    late = bool(history) and history[-1][0] * (1 - window) >= warmup
    return gain is not None and late and gain < bits


@dataclass
class ConvergenceStop:
    """Tracks one training's validations and says when to stop."""

    bits: float
    window: float = 0.2
    update: int = 0  # updates done (set by the task after each step)
    history: list[tuple[int, float]] = field(default_factory=list)
    path: Path | None = None

    def observe(self, save_dir: str | None, loss: float, warmup: int = 0) -> bool:
        """Record a validation at the current update; True when converged."""
        if self.path is None and save_dir:
            self.path = Path(save_dir) / "convergence.json"
            if self.path.is_file():  # a resumed run: what came before this update is kept
                self.history = [(int(u), float(v)) for u, v in read_record(self.path.parent)
                                ["history"]]
        self.history = [h for h in self.history if h[0] < self.update] + [(self.update,
                                                                           float(loss))]
        done = is_converged(self.history, self.bits, self.window, warmup)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {
                "rule": f"gain over the last {self.window:.0%} of updates < {self.bits} bits",
                "history": self.history, "gain": gain_over_window(self.history, self.window),
                "converged": done})
        return done


def read_record(save_dir: Path) -> dict | None:
    """What a training with ``--stop-converged-bits`` recorded in its save dir (None: nothing)."""
    path = Path(save_dir) / "convergence.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def stop_summary(save_dir: Path, gain_key: str = "gain") -> dict | None:
    """``{"converged", <gain_key>}`` of :func:`read_record` (what a report row keeps)."""
    rec = read_record(save_dir)
    return None if rec is None else {"converged": rec["converged"], gain_key: rec["gain"]}


ACTIVE: ConvergenceStop | None = None
"""The tracker of the training in this process (set by the task when the option is on)."""
