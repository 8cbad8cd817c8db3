"""Noise controls of latency measurement (against drift and noise, see :mod:`hat.latency`): a
periodic reference, an interleaved reference, and re-measurement of suspicious rows (high
std/mean, or far from a quick least-squares fit on cost proxies of the rows so far)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hat.errors import HatConfigError
from hat.latency.measure.timing import Measurement
from hat.space import SubConfig


@dataclass(frozen=True)
class NoiseControl:
    """Periodic or interleaved reference and outlier re-measurement (0 switches a control off).

    The field names are the keys of a dataset sidecar's ``noise`` section (resume checks
    them)."""

    ref_every: int = 25  # re-measure the periodic reference every K rows (0: none)
    drift_correct: bool = True  # multiply rows by the correction factor first / latest reference
    drift_tolerance: float = 0.02  # ...only when the ratio is off by more than this
    outlier_cv: float = 0.10  # re-measure when std/mean (trimmed) exceeds this
    outlier_fit: float = 0.25  # ...or the row is this far (relative) from the quick fit
    fit_min_rows: int = 30  # rows needed before the quick fit is used
    remeasure: int = 2  # at most this many extra attempts per row
    # interleaved reference: every timed run of a row is followed by one run of the smallest
    # SubTransformer (decoding ``interleave_steps`` steps); the row is its per-run ratios to it
    interleave: bool = False
    interleave_steps: int = 10

    def __post_init__(self) -> None:
        if self.interleave and self.ref_every > 0:
            raise HatConfigError("lat-ref-interleave replaces the periodic reference: set "
                                 f"lat-ref-every 0 (got {self.ref_every})")
        if self.interleave_steps < 1:
            raise HatConfigError(f"lat-ref-interleave-steps must be >= 1, "
                                 f"got {self.interleave_steps}")

    @classmethod
    def off(cls) -> NoiseControl:
        """No reference, no correction, no re-measurement (HAT's way)."""
        return cls(ref_every=0, drift_correct=False, outlier_cv=0.0, outlier_fit=0.0,
                   remeasure=0)


def cost_proxies(cfg: SubConfig, qkv_dim: int = 512) -> tuple[list[float], list[float]]:
    """Regressors for a quick linear fit of encoder and decoder latency (weights read, layers,
    heads, attended encoder layers, output-projection width)."""
    q, e, d = qkv_dim, cfg.encoder_embed_dim, cfg.decoder_embed_dim
    enc = [1.0, cfg.encoder_layer_num,
           sum(4 * q * e + 2 * e * f for f in cfg.encoder_ffn_embed_dim) / 1e6,
           float(sum(cfg.encoder_self_attention_heads))]
    dec = [1.0, cfg.decoder_layer_num,
           sum(2 * q * d + 2 * q * e + 4 * q * d + 2 * d * f  # self, ende (q,o + k,v), ffn
               for f in cfg.decoder_ffn_embed_dim) / 1e6,
           float(sum(cfg.decoder_self_attention_heads) + sum(cfg.decoder_ende_attention_heads)),
           float(sum(1 if a == -1 else a + 1 for a in cfg.decoder_arbitrary_ende_attn)),
           d / 100.0]
    return enc, dec


class QuickFit:
    """Least-squares fit of recent rows' latency on :func:`cost_proxies` (outlier detection)."""

    def __init__(self, qkv_dim: int, window: int = 400) -> None:
        self.qkv_dim, self.window = qkv_dim, window
        self.x: tuple[list[list[float]], list[list[float]]] = ([], [])
        self.y: tuple[list[float], list[float]] = ([], [])

    def add(self, cfg: SubConfig, m: Measurement) -> None:
        """Record a finished row."""
        for k, (x, y) in enumerate(zip(cost_proxies(cfg, self.qkv_dim), (m.enc_mean, m.dec_mean))):
            self.x[k].append(x)
            self.y[k].append(y)
            del self.x[k][: -self.window], self.y[k][: -self.window]

    def __len__(self) -> int:
        return len(self.y[0])

    def deviation(self, cfg: SubConfig, m: Measurement) -> tuple[float, float]:
        """(relative deviation of the row's total from the fit, the fit's typical deviation)."""
        pred, typical = 0.0, []
        for k, x_new in enumerate(cost_proxies(cfg, self.qkv_dim)):
            x, y = np.asarray(self.x[k]), np.asarray(self.y[k])
            scale = np.maximum(np.abs(x).max(0), 1e-9)
            a = x / scale
            # a little ridge keeps the constant encoder_layer_num column harmless
            coef = np.linalg.solve(a.T @ a + 1e-6 * np.eye(a.shape[1]), a.T @ y)
            pred += float(np.asarray(x_new) / scale @ coef)
            typical.append(np.median(np.abs(a @ coef - y) / y))
        pred = max(pred, 1e-9)
        return abs(m.total - pred) / pred, float(max(typical))


def correction_factor(baseline: float, current: float, tolerance: float) -> float:
    """The periodic reference's correction factor ``baseline / current`` (multiplies a row);
    1 while the two agree within ``tolerance`` (relative)."""
    f = baseline / current
    return f if abs(f - 1.0) > tolerance else 1.0


def is_flagged(m: Measurement, cfg: SubConfig, noise: NoiseControl, fit: QuickFit | None,
             factors: tuple[float, float] = (1.0, 1.0)) -> bool:
    m = m.scaled(*factors)
    if noise.outlier_cv > 0 and m.cv > noise.outlier_cv:
        return True
    if fit is not None and noise.outlier_fit > 0 and len(fit) >= noise.fit_min_rows:
        dev, typical = fit.deviation(cfg, m)
        return dev > max(noise.outlier_fit, 4 * typical)
    return False


def measure_with_retries(measure: Callable[[SubConfig], Measurement], cfg: SubConfig,
                          noise: NoiseControl, fit: QuickFit | None,
                          factors: tuple[float, float] = (1.0, 1.0)
                          ) -> tuple[Measurement, Measurement, int]:
    """Measure; while the attempt looks noisy, measure again (at most ``remeasure`` times).

    Keeps the first clean attempt, else the lower median (by total) of all attempts: contention
    only adds time, so the lower one is the better estimate. Returns (kept, first, attempts).
    """
    attempts = [measure(cfg)]
    while len(attempts) <= noise.remeasure and is_flagged(attempts[-1], cfg, noise, fit, factors):
        attempts.append(measure(cfg))
    if len(attempts) == 1 or not is_flagged(attempts[-1], cfg, noise, fit, factors):
        kept = attempts[-1]
    else:
        kept = sorted(attempts, key=lambda m: m.total)[(len(attempts) - 1) // 2]
    return kept, attempts[0], len(attempts)
