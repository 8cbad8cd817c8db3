"""Latency for the search: the predictor (times a calibration factor), and measurements with the
predictor's own protocol (calibration before the search, measured winners after it)."""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hat.errors import HatConfigError
from hat.latency.predict.predictor import LatencyPredictor, NotAPredictorError, PredictorError
from hat.space import SearchSpace, SubConfig, attended_layers


class LatencyModel:
    """Predicted latency (ms) of SubTransformers: ``scale`` x the predictor's output."""

    def __init__(self, predictor: LatencyPredictor, scale: float = 1.0) -> None:
        self.predictor, self.scale = predictor, float(scale)

    def raw(self, cfgs: Sequence[SubConfig]) -> np.ndarray:
        """The predictor's own output (no calibration)."""
        x = np.asarray([SearchSpace.features(c) for c in cfgs], dtype=np.float64)
        return self.predictor.predict(x) if len(cfgs) else np.zeros(0)

    def __call__(self, cfgs: Sequence[SubConfig]) -> np.ndarray:
        return self.raw(cfgs) * self.scale


def load_predictor(path: str | None, feature_norm: Sequence[float] | None,
                   lat_norm: float | None, where: str,
                   space: SearchSpace | None = None) -> LatencyPredictor:
    """The predictor at ``path`` with HAT's norms checked against its stored ones (and, given
    the searched ``space``, that space against the one its dataset sampled)."""
    if not path:
        raise HatConfigError(f"{where}: ckpt-path (the latency predictor) is not set")
    if not Path(path).is_file():
        raise HatConfigError(f"ckpt-path {path} ({where}): latency predictor not found; "
                             f"{how_to_make_predictor(path)}")
    try:
        predictor = LatencyPredictor.load(path, feature_norm=feature_norm, lat_norm=lat_norm)
    except NotAPredictorError as e:
        todo = ("the SuperTransformer checkpoint goes in restore-file; " if
                e.arch.startswith("transformersuper") else "")
        said = str(e).removeprefix(f"{path}: ")
        raise HatConfigError(f"ckpt-path {path} ({where}): {said}; {todo}ckpt-path takes the "
                             f"latency predictor: {how_to_make_predictor(path)}") from None
    except PredictorError as e:
        raise HatConfigError(f"ckpt-path {path} ({where}): {e}") from None
    if space is not None:
        check_predictor_space(predictor, space, f"ckpt-path {path} ({where})")
    return predictor


def check_predictor_space(predictor: LatencyPredictor, space: SearchSpace, where: str) -> None:
    """Refuse a predictor whose dataset sampled another space: every choice of the searched
    ``space`` must lie within the range its dataset's space sampled (the arbitrary
    encoder-decoder attention choices: among them). HAT's predictors record no space."""
    from hat.space import CHOICE_KEYS

    trained = (predictor.meta.get("dataset") or {}).get("space")
    if not isinstance(trained, dict):
        return
    for key in CHOICE_KEYS:
        have, ours = trained.get(key), list(getattr(space, key))
        if not isinstance(have, list) or not have:
            continue
        if key == "decoder_arbitrary_ende_attn_choice":
            outside = [v for v in ours if v not in have]
        else:
            outside = [v for v in ours if not min(have) <= v <= max(have)]
        if outside:
            raise HatConfigError(
                f"{where}: trained on another search space: its dataset sampled "
                f"{key.replace('_', '-')} {have}, this search has {ours} ({outside} outside "
                "it), so its latencies would be extrapolated. Measure a dataset and train a "
                "predictor for this space (latency_dataset.py, latency_predictor.py), or search "
                "the predictor's space")


def how_to_make_predictor(path: str | Path, configs: str | Path = "configs") -> str:
    """The command that writes the predictor ``path``: the predictor config whose ckpt-path it
    is (and, for HAT's hardware, how to fetch HAT's dataset first)."""
    from hat.yamlio import load_yaml

    makers = []
    for cfg in sorted(Path(configs).glob("*/latency_predictor/*.yml")):
        try:
            keys = load_yaml(cfg)
        except HatConfigError:
            continue
        if Path(str(keys.get("ckpt-path", ""))) == Path(path):
            makers.append((cfg, str(keys.get("lat-dataset-path", ""))))
    if not makers:
        return ("train one with latency_predictor.py (configs/<task>/latency_predictor/*.yml) "
                "and point ckpt-path at it")
    cfg, data = makers[0]
    fetch = ""
    if data and not Path(data).is_file():
        fetch = (f" after getting its dataset {data} (HAT's published data: python "
                 "scripts/fetch_hat_latency.py; your own: latency_dataset.py)")
    return f"train it with: python latency_predictor.py --configs={cfg}{fetch}"


# ----------------------------------------------------------------------------- measuring
@dataclass
class MeasureSetup:
    """How winners/calibration points are measured: the protocol and the model to time."""

    protocol: Any  # hat.latency.measure.timing.Protocol
    model_args: argparse.Namespace
    source: str  # where the protocol came from, for the log

    def describe(self) -> str:
        p = self.protocol
        extra = ", CUDA-graph replays" if p.cuda_graph else ""
        thr = f", {p.threads} thread(s), {p.timer} timer" if p.device == "cpu" else ""
        from hat.latency.measure.timing import DEPLOYMENTS

        return (f"{p.device}{thr}{extra}, length {p.src_len}, beam {p.beam}, warm-up {p.warmup}, "
                f"{p.iters} timed runs, decode: {DEPLOYMENTS[p.deployment]} ({self.source})")


def measure_setup(predictor: LatencyPredictor, device: str, search_args: Any) -> MeasureSetup:
    """The predictor's measurement protocol and model (from its sidecar), on ``device``
    ('cpu' or 'gpu'); HAT's protocol and the searched SuperTransformer's shape when the
    predictor does not say (HAT's own files)."""
    from hat.latency.measure.model import DEFAULT_LATITER, sentence_length, vocab_sizes
    from hat.latency.measure.timing import Protocol

    kind = "cuda" if device in ("gpu", "cuda") else "cpu"
    ds = predictor.meta.get("dataset") or {}
    proto, model = ds.get("protocol"), ds.get("model")
    if proto:
        changes: dict[str, Any] = {}  # measured elsewhere: this machine's device, its timer
        if kind == "cpu" and str(proto.get("device", "cpu")).startswith("cuda"):
            changes = {"device": "cpu", "cuda_graph": False, "threads": None, "timer": "wall"}
        elif kind == "cuda":
            changes = {"device": "cuda", "threads": None, "timer": "wall"}
        protocol = Protocol.from_record(proto, **changes)
        source = f"the predictor's dataset {ds.get('csv', '?')}"
    else:
        protocol = Protocol(src_len=sentence_length(getattr(search_args, "arch", "")), beam=5,
                            warmup=5, iters=DEFAULT_LATITER[kind], device=kind)
        source = "HAT's protocol: the predictor records none"
    margs = argparse.Namespace(**vars(search_args))
    if model:
        margs.arch = model.get("arch", margs.arch)
        margs.lat_src_vocab_size = model.get("src_vocab")
        margs.lat_tgt_vocab_size = model.get("tgt_vocab")
        margs.share_all_embeddings = model.get("share_all_embeddings",
                                               margs.share_all_embeddings)
        space = ds.get("space") or {}
        for key in ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim",
                    "decoder_ffn_embed_dim", "encoder_layers", "decoder_layers",
                    "encoder_attention_heads", "decoder_attention_heads", "qkv_dim"):
            if key in space:
                setattr(margs, key, space[key])
    else:
        margs.lat_src_vocab_size = margs.lat_tgt_vocab_size = None
        src, tgt = vocab_sizes(margs)
        margs.lat_src_vocab_size, margs.lat_tgt_vocab_size = src, tgt
    return MeasureSetup(protocol, margs, source)


class Measurer:
    """Times SubTransformers with a :class:`MeasureSetup` (model built once)."""

    def __init__(self, setup: MeasureSetup) -> None:
        from hat.latency.measure.model import build_model
        from hat.latency.measure.timing import LatencyMeter

        self.setup = setup
        model, _, _ = build_model(setup.model_args, seed=1)
        self.meter = LatencyMeter(model, setup.protocol)

    def __call__(self, cfg: SubConfig) -> float:
        """Encoder + decoder latency in ms (trimmed means)."""
        return float(self.meter.measure(cfg).total)


def machine_differences(predictor: LatencyPredictor, now: dict[str, Any],
                        threads: int | None) -> list[str]:
    """What differs between the predictor's measuring machine and this one."""
    ds = predictor.meta.get("dataset") or {}
    then = ds.get("machine")
    if not then:
        return ["the predictor records no machine (HAT's file?)"]
    out = []
    for key in ("cpu", "cpu_count", "torch", "gpu"):
        if key in then and then.get(key) != now.get(key):
            out.append(f"{key}: predictor {then.get(key)!r}, here {now.get(key)!r}")
    proto = ds.get("protocol") or {}
    if threads is not None and proto.get("threads") not in (None, threads):
        out.append(f"threads: predictor {proto.get('threads')}, here {threads}")
    return out


def calibration_configs(space: SearchSpace, n: int, seed: int) -> list[SubConfig]:
    """The smallest and the largest SubTransformer, then random ones (seeded), ``n`` in all."""
    arbs = space.decoder_arbitrary_ende_attn_choice
    cfgs = [space.smallest(min(arbs, key=attended_layers)),
            space.largest(max(arbs, key=attended_layers))]
    rng = random.Random(seed)
    while len(cfgs) < n:
        cfgs.append(space.sample(rng))
    return cfgs[:n]


def fit_scale(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, Any]:
    """One factor s with s x predicted ~ measured (geometric mean of the ratios) and the
    points' errors before and after scaling."""
    p, m = np.asarray(predicted, np.float64), np.asarray(measured, np.float64)
    if len(p) == 0 or np.any(p <= 0) or np.any(m <= 0):
        raise HatConfigError("latency calibration needs positive predicted and measured "
                             f"latencies, got {p.tolist()} / {m.tolist()}")
    s = float(math.exp(np.mean(np.log(m / p))))

    def err(q: np.ndarray) -> dict[str, float]:
        rel = np.abs(q - m) / m
        return {"mape_pct": float(100 * rel.mean()), "max_err_pct": float(100 * rel.max()),
                "within10_pct": float(100 * np.mean(rel <= 0.10))}

    rank = spearman(p, m) if len(p) > 2 else float("nan")
    return {"scale": s, "n": int(len(p)), "before": err(p), "after": err(s * p),
            "spearman": rank, "predicted_ms": p.tolist(), "measured_ms": m.tolist()}


def _ranks(x: Sequence[float]) -> np.ndarray:
    """Ranks from 0, tied values sharing their average rank."""
    v = np.asarray(x, dtype=float)
    r = np.empty(len(v))
    r[np.argsort(v, kind="mergesort")] = np.arange(len(v))
    for u in np.unique(v):
        r[v == u] = r[v == u].mean()
    return r


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation, ties by average rank (BLEU scores can tie); nan when one
    side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def calibrate(model: LatencyModel, measure: Callable[[SubConfig], float], space: SearchSpace,
              n: int, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure ``n`` SubTransformers spread over the space, fit the scale, apply it to
    ``model``; returns the fit (factor, errors before/after, the points)."""
    if n < 1:
        raise HatConfigError(f"calibrate-latency must be >= 1, got {n}")
    cfgs = calibration_configs(space, n, seed)
    pred = model.raw(cfgs)
    meas = []
    for i, c in enumerate(cfgs):
        meas.append(measure(c))
        log(f"calibration {i + 1}/{n}: predicted {pred[i]:.4g} ms, measured {meas[-1]:.4g} ms")
    fit = fit_scale(pred, meas)
    model.scale = fit["scale"]
    return fit
