"""HAT's latency predictor: a 5-Linear MLP on 10 normalised architecture features.

Network (state-dict compatible with HAT's ``.pt`` files): ``first_layer`` Linear(10,400)+ReLU,
``layers.{0,1,2}`` 3 x [Linear(400,400)+ReLU], ``predict`` Linear(400,1). Inputs are divided by
``feature_norm``; the output times ``lat_norm`` is the predicted encoder+decoder latency in ms.

Training recipes (:data:`RECIPES`): ``hat`` (HAT's: Adam lr 1e-5, batch 128, 5000 steps, last
weights; seeded here), ``mlp`` (ours: the network started as the least-squares linear fit, then
warm-up + cosine Adam at lr 1e-3 on standardised inputs/targets, keeping the checkpoint with the
lowest validation error) and ``default`` (``mlp`` on top of a least-squares linear model of the
analytic cost terms, :mod:`hat.latency.costterms`, both fitted to the training latencies with the
device's drift over the measurement order divided out, :mod:`hat.latency.drift`, then scaled by
least squares to the measured latencies). Standardisation is folded into the first/last
layer on export, so every member is a plain HAT state dict; cost-term coefficients, if any, are
stored beside it. Inference runs in numpy/torch (float32), batched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hat.atomic import atomic_torch_save, atomic_write_json
from hat.errors import HatConfigError
from hat.latency.costterms import COST_TERMS, cost_terms, fit_relative_ridge
from hat.latency.csvio import N_FEATURES

FEATURE_NORM: tuple[float, ...] = (640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2)
SIDECAR_SUFFIX = ".json"
COST_KEY = "cost.coef"  # cost-term coefficients (ms) inside a saved predictor
_CHUNK = 2048
_SMALL = 16


class PredictorError(HatConfigError):
    """A predictor file or its normalisation settings are unusable."""


# ----------------------------------------------------------------------------- network
class LatencyMLP(nn.Module):
    """HAT's predictor network (same module names, so HAT state dicts load)."""

    def __init__(self, feature_dim: int = N_FEATURES, hidden_dim: int = 400,
                 hidden_layer_num: int = 3) -> None:
        super().__init__()
        self.first_layer = nn.Linear(feature_dim, hidden_dim)
        self.layers = nn.ModuleList(
            nn.Linear(hidden_dim, hidden_dim) for _ in range(hidden_layer_num)
        )
        self.predict = nn.Linear(hidden_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.first_layer(x))
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.predict(x)


def expected_shapes(feature_dim: int = N_FEATURES, hidden_dim: int = 400,
                    hidden_layer_num: int = 3) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape for the given architecture."""
    shapes: dict[str, tuple[int, ...]] = {
        "first_layer.weight": (hidden_dim, feature_dim),
        "first_layer.bias": (hidden_dim,),
    }
    for i in range(hidden_layer_num):
        shapes[f"layers.{i}.weight"] = (hidden_dim, hidden_dim)
        shapes[f"layers.{i}.bias"] = (hidden_dim,)
    shapes["predict.weight"] = (1, hidden_dim)
    shapes["predict.bias"] = (1,)
    return shapes


def check_state_dict(sd: dict[str, Any], source: str, hidden_dim: int | None = None,
                     hidden_layer_num: int | None = None) -> None:
    """Raise :class:`PredictorError` naming file, key and expected/found shape on a mismatch."""
    if not isinstance(sd, dict):
        raise PredictorError(f"{source}: expected a state dict, found {type(sd).__name__}")
    if "first_layer.weight" not in sd:
        raise PredictorError(
            f"{source}: missing key 'first_layer.weight' (keys found: {sorted(sd)[:8]})"
        )
    hid = hidden_dim or int(sd["first_layer.weight"].shape[0])
    nl = hidden_layer_num
    if nl is None:
        nl = len({k.split(".")[1] for k in sd if k.startswith("layers.")})
    want = expected_shapes(N_FEATURES, hid, nl)
    for key, shape in want.items():
        if key not in sd:
            raise PredictorError(f"{source}: missing key {key!r} (expected shape {shape})")
        found = tuple(sd[key].shape)
        if found != shape:
            raise PredictorError(
                f"{source}: key {key!r} has shape {found}, expected {shape}"
            )
    extra = sorted(set(sd) - set(want))
    if extra:
        raise PredictorError(f"{source}: unexpected key(s) {extra} for a {nl}-hidden-layer MLP")


# ----------------------------------------------------------------------------- norms
def check_norms(feature_norm: Sequence[float], lat_norm: float,
                source: str | None = None) -> tuple[np.ndarray, float]:
    """Validate HAT's ``feature-norm`` (10 positive numbers) and ``lat-norm`` (> 0)."""
    pre = f"{source}: " if source else ""
    fn = np.asarray(list(feature_norm), dtype=np.float64).reshape(-1)
    if fn.shape[0] != N_FEATURES:
        raise PredictorError(
            f"{pre}feature-norm must have {N_FEATURES} values (one per feature), got {fn.shape[0]}"
        )
    if not np.all(np.isfinite(fn)) or np.any(fn <= 0):
        raise PredictorError(f"{pre}feature-norm values must be finite and > 0, got {fn.tolist()}")
    try:
        ln = float(lat_norm)
    except (TypeError, ValueError):
        raise PredictorError(f"{pre}lat-norm must be a number > 0, got {lat_norm!r}") from None
    if not math.isfinite(ln) or ln <= 0:
        raise PredictorError(f"{pre}lat-norm must be > 0, got {lat_norm!r}")
    return fn, ln


# ----------------------------------------------------------------------------- predictor
class LatencyPredictor:
    """One or more HAT MLPs (averaged) plus their normalisation; predicts milliseconds.

    Optionally plus a linear model on analytic cost terms (``cost_coef``, ms per term of
    :func:`hat.latency.costterms.cost_terms`), which the few-shot fits use; a predictor may
    also be that linear model alone (no members).
    """

    def __init__(self, members: Sequence[dict[str, Any]], feature_norm: Sequence[float],
                 lat_norm: float, meta: dict[str, Any] | None = None,
                 cost_coef: Sequence[float] | np.ndarray | None = None) -> None:
        if not members and cost_coef is None:
            raise PredictorError("a predictor needs at least one member network or cost terms")
        self.feature_norm, self.lat_norm = check_norms(feature_norm, lat_norm)
        self.meta: dict[str, Any] = dict(meta or {})
        self.members = [
            {k: _to_numpy(v) for k, v in m.items()} for m in members
        ]
        for i, m in enumerate(self.members):
            check_state_dict(m, f"member {i}")
        self.cost_coef: np.ndarray | None = None
        if cost_coef is not None:
            c = _to_numpy(cost_coef).reshape(-1)
            if c.shape[0] != len(COST_TERMS) or not np.all(np.isfinite(c)):
                raise PredictorError(
                    f"cost coefficients must be {len(COST_TERMS)} finite numbers "
                    f"({', '.join(COST_TERMS)}), got shape {c.shape}")
            self.cost_coef = c
        self.threads = 1
        self._compile()

    def _compile(self) -> None:
        inv = (1.0 / self.feature_norm).astype(np.float32)
        self._packed = []
        for m in self.members:
            n_hidden = len([k for k in m if k.startswith("layers.") and k.endswith(".weight")])
            ws = [m["first_layer.weight"].T * inv[:, None]]  # fold 1/feature_norm in
            ws += [m[f"layers.{i}.weight"].T for i in range(n_hidden)]
            bs = [m["first_layer.bias"]] + [m[f"layers.{i}.bias"] for i in range(n_hidden)]
            wp = m["predict.weight"].T * self.lat_norm  # fold lat_norm in
            bp = m["predict.bias"] * self.lat_norm
            self._packed.append((
                [_f32(w) for w in ws], [_f32(b) for b in bs], _f32(wp), _f32(bp),
            ))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) for raw (un-normalised) features, [N,10] -> [N] (float64).

        Runs in float32 on ``self.threads`` torch threads (default 1: robust on shared CPUs),
        in chunks of 2048 rows (numpy for <= 16 rows); ensemble members are averaged.
        """
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != N_FEATURES:
            raise ValueError(f"features must have shape [N, {N_FEATURES}], got {x.shape}")
        out = self._predict_mlp(x) if self.members else np.zeros(x.shape[0])
        if self.cost_coef is not None:
            terms = cost_terms(np.asarray(features, np.float64).reshape(x.shape))
            out = out + terms @ self.cost_coef
        return out

    def _predict_mlp(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] <= _SMALL:  # tiny batches: numpy has less per-call overhead than torch
            acc = np.zeros(x.shape[0], dtype=np.float64)
            for ws, bs, wp, bp in self._packed:
                h = x
                for w, b in zip(ws, bs):
                    h = h @ w.numpy()
                    h += b.numpy()
                    np.maximum(h, 0, out=h)
                acc += (h @ wp.numpy())[:, 0] + bp.numpy()[0]
            return acc / len(self._packed)
        xt = torch.from_numpy(np.ascontiguousarray(x))
        out = torch.empty(x.shape[0], dtype=torch.float64)
        with torch_threads(self.threads), torch.inference_mode():
            for s in range(0, x.shape[0], _CHUNK):
                xc = xt[s:s + _CHUNK]
                acc = torch.zeros(xc.shape[0], dtype=torch.float64)
                for ws, bs, wp, bp in self._packed:
                    h = xc
                    for w, b in zip(ws, bs):
                        h = torch.addmm(b, h, w).clamp_(min=0)
                    acc += torch.addmm(bp, h, wp)[:, 0]
                out[s:s + _CHUNK] = acc / len(self._packed)
        return out.numpy()

    def predict_one(self, features: Sequence[float]) -> float:
        """Predicted latency (ms) for one feature vector."""
        return float(self.predict(np.asarray(features, dtype=np.float32)[None, :])[0])

    def state_dict(self, member: int = 0) -> dict[str, torch.Tensor]:
        """HAT-compatible plain state dict of one member."""
        if not 0 <= member < len(self.members):
            raise PredictorError(f"no member network {member} (this predictor has "
                                 f"{len(self.members)})")
        m = self.members[member]
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in m.items()}

    # ----- save / load --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Save member 0 as a plain HAT state dict at ``path`` (HAT's code can load it), any
        further ensemble members at ``<path>.members.pt``, and a JSON sidecar ``<path>.json``
        with feature_norm / lat_norm / recipe / metrics. All writes are atomic.

        Cost-term coefficients go into ``path`` too (key ``cost.coef``): HAT's strict loading
        then refuses the file instead of silently predicting only the MLP part."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sd = self.state_dict(0) if self.members else {}
        if self.cost_coef is not None:
            sd[COST_KEY] = torch.from_numpy(self.cost_coef.copy())
        atomic_torch_save(sd, path)
        extra = Path(str(path) + ".members.pt")
        if len(self.members) > 1:
            atomic_torch_save([self.state_dict(i) for i in range(1, len(self.members))], extra)
        elif extra.exists():
            extra.unlink()
        side = {
            "format": "hat-latency-predictor",
            "version": 1,
            "feature_norm": self.feature_norm.tolist(),
            "lat_norm": self.lat_norm,
            "n_members": len(self.members),
            "cost_terms": list(COST_TERMS) if self.cost_coef is not None else None,
            "meta": self.meta,
        }
        atomic_write_json(sidecar_path(path), side, indent=2)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, feature_norm: Sequence[float] | None = None,
             lat_norm: float | None = None) -> LatencyPredictor:
        """Load our checkpoint (plain state dict + sidecar) or one of HAT's plain ``.pt`` files.

        Without a sidecar, ``lat_norm`` must be given (``feature_norm`` defaults to HAT's). With
        a sidecar, given norms must agree with the stored ones.
        """
        path = Path(path)
        if not path.is_file():
            raise PredictorError(f"{path}: predictor file not found")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
            raise PredictorError(f"{path}: cannot read predictor file ({e})") from None
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        cost_coef = None
        if isinstance(sd, dict) and COST_KEY in sd:
            sd = dict(sd)
            cost_coef = sd.pop(COST_KEY)
        members = []
        if cost_coef is None or sd:
            check_state_dict(sd, str(path))
            members = [sd]
        side_path = sidecar_path(path)
        meta: dict[str, Any] = {}
        if side_path.is_file():
            try:
                side = json.loads(side_path.read_text())
                fn_s, ln_s = side["feature_norm"], side["lat_norm"]
            except (ValueError, KeyError) as e:
                raise PredictorError(f"{side_path}: unreadable predictor sidecar ({e})") from None
            fn_s, ln_s = check_norms(fn_s, ln_s, str(side_path))
            if feature_norm is not None:
                fn, _ = check_norms(feature_norm, 1.0)
                if not np.allclose(fn, fn_s):
                    raise PredictorError(
                        f"{path}: stored feature_norm {fn_s.tolist()} (in {side_path.name}) "
                        f"disagrees with the configured feature-norm {fn.tolist()}"
                    )
            if lat_norm is not None:
                _, ln = check_norms(FEATURE_NORM, lat_norm)
                if not math.isclose(ln, ln_s, rel_tol=1e-9):
                    raise PredictorError(
                        f"{path}: stored lat_norm {ln_s} (in {side_path.name}) disagrees with "
                        f"the configured lat-norm {ln}"
                    )
            feature_norm, lat_norm = fn_s, ln_s
            terms = side.get("cost_terms")
            if cost_coef is not None and terms is not None and list(terms) != list(COST_TERMS):
                raise PredictorError(
                    f"{path}: written with cost terms {terms}, this version has "
                    f"{list(COST_TERMS)}; refit the predictor")
            meta = dict(side.get("meta") or {})
            n_members = int(side.get("n_members", 1))
            if n_members > 1:
                extra_path = Path(str(path) + ".members.pt")
                if not extra_path.is_file():
                    raise PredictorError(
                        f"{path}: sidecar lists {n_members} members but {extra_path} is missing"
                    )
                extra = torch.load(extra_path, map_location="cpu", weights_only=True)
                for i, m in enumerate(extra):
                    check_state_dict(m, f"{extra_path} (member {i + 1})")
                members += list(extra)
        elif lat_norm is None:
            raise PredictorError(
                f"{path}: a plain state dict without a {side_path.name} sidecar needs lat-norm "
                "(e.g. 200 TITAN Xp, 300 Xeon, 5000 Raspberry Pi)"
            )
        if feature_norm is None:
            feature_norm = FEATURE_NORM
        try:
            return cls(members, feature_norm, lat_norm, meta, cost_coef=cost_coef)
        except PredictorError as e:
            raise PredictorError(f"{path}: {e}") from None


def combine_predictors(parts: Sequence[tuple[float, LatencyPredictor]], bias_ms: float = 0.0,
                       meta: dict[str, Any] | None = None) -> LatencyPredictor:
    """One predictor computing ``sum(w * p(x)) + bias_ms`` exactly: the parts' member networks
    (output layers rescaled so that their plain mean is the weighted sum) and cost terms.
    The parts must share ``feature_norm``; the first part's ``lat_norm`` is kept."""
    if not parts:
        raise ValueError("combine_predictors needs at least one part")
    fn, ln = parts[0][1].feature_norm, parts[0][1].lat_norm
    n_total = sum(len(p.members) for _, p in parts)
    members: list[dict[str, np.ndarray]] = []
    coef: np.ndarray | None = None
    for w, p in parts:
        if not np.allclose(p.feature_norm, fn):
            raise ValueError("combined predictors need the same feature_norm")
        k = w * n_total / max(1, len(p.members)) * p.lat_norm / ln
        for m in p.members:
            m2 = {key: v.copy() for key, v in m.items()}
            m2["predict.weight"] = k * m["predict.weight"]
            m2["predict.bias"] = k * m["predict.bias"]
            members.append(m2)
        if p.cost_coef is not None:
            coef = w * p.cost_coef + (0.0 if coef is None else coef)
    if bias_ms:
        if coef is not None:
            coef = coef.copy()
            coef[COST_TERMS.index("constant")] += bias_ms
        else:
            for m in members:
                m["predict.bias"] = m["predict.bias"] + bias_ms / ln
    return LatencyPredictor(members, fn, ln, meta, cost_coef=coef)


def sidecar_path(path: str | os.PathLike) -> Path:
    """``foo.pt`` -> ``foo.pt.json``."""
    return Path(str(path) + SIDECAR_SUFFIX)


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _to_numpy(v: Any) -> np.ndarray:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64)


# ----------------------------------------------------------------------------- metrics / split
def split_indices(n: int, seed: int, fractions: tuple[float, float] = (0.8, 0.1)
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded shuffle, then the first 80% train, next 10% validation, rest test."""
    perm = np.random.default_rng(seed).permutation(n)
    n_tr, n_va = int(n * fractions[0]), int(n * fractions[1])
    return perm[:n_tr], perm[n_tr:n_tr + n_va], perm[n_tr + n_va:]


def metrics(pred_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float]:
    """RMSE (ms), MAPE (%) and the share of rows within +-10% (%)."""
    pred, true = np.asarray(pred_ms, float), np.asarray(true_ms, float)
    rel = np.abs(pred - true) / true
    return {
        "rmse_ms": float(np.sqrt(np.mean((pred - true) ** 2))),
        "mape_pct": float(100 * np.mean(rel)),
        "within10_pct": float(100 * np.mean(rel <= 0.10)),
    }


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class Recipe:
    """How to train. ``loss``: 'mse' (HAT's) or 'rel' (squared relative error); ``select``:
    'last' (HAT's) or 'best_val' (lowest validation relative error, checked every eval_every)."""

    name: str
    lr: float
    bsz: int
    steps: int
    schedule: str = "const"  # const | cosine
    warmup: int = 0
    weight_decay: float = 0.0
    loss: str = "mse"
    select: str = "last"
    select_metric: str = "rel"  # rel | mse (validation criterion for select='best_val')
    ema: float = 0.0  # decay of an exponential moving average of the weights (0 = off)
    linear_init: bool = False  # start from the (loss-weighted) least-squares linear fit
    cost_base: bool = False  # add a least-squares linear model on the cost terms; MLP on the rest
    standardize: bool = False
    eval_every: int = 100
    members: int = 1
    drift_fit: bool = False  # fit drift-corrected labels, then rescale to the measured ones


LOSS_POWER = {"mse": 0.0, "sqrt": 1.0, "rel": 2.0}
RECIPES: dict[str, Recipe] = {
    "hat": Recipe("hat", lr=1e-5, bsz=128, steps=5000),
    # HAT's MLP alone (its files load in HAT's code): starts from the least-squares linear fit
    # (latency is nearly linear in HAT's features), then Adam with warm-up + cosine on the
    # squared error; keeps the checkpoint (the linear start included) with the lowest
    # validation relative error.
    "mlp": Recipe(
        "mlp", lr=1e-3, bsz=128, steps=3000, schedule="cosine", warmup=100,
        loss="mse", select="best_val", standardize=True, eval_every=50, linear_init=True,
    ),
    # The same MLP on top of a least-squares linear model of the 13 cost terms
    # (hat/latency/costterms.py): the products of layers, widths and FFN sizes that HAT's ten
    # averages leave to the network are given exactly; the MLP learns the remainder.
    "default": Recipe(
        "default", lr=1e-3, bsz=128, steps=3000, schedule="cosine", warmup=100,
        loss="mse", select="best_val", standardize=True, eval_every=50, linear_init=True,
        cost_base=True, drift_fit=True,
    ),
}


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """A named recipe with optional field overrides (``None`` values are ignored)."""
    if name not in RECIPES:
        raise HatConfigError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run torch ops on ``n`` threads. The predictor's matmuls are small: one thread is about as
    fast, and avoids a 10-50x slow-down from OpenMP spinning when the CPU is shared."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _lr_at(r: Recipe, step: int) -> float:
    if r.warmup and step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    if r.schedule == "cosine":
        t = (step - r.warmup) / max(1, r.steps - r.warmup)
        return 0.5 * r.lr * (1 + math.cos(math.pi * min(1.0, t)))
    return r.lr


LINEAR_SHIFT = 10.0  # standardised inputs above -10 pass the first ReLU unchanged


def _init_as_linear_fit(net: LatencyMLP, x: torch.Tensor, y: torch.Tensor,
                        w: torch.Tensor | None) -> None:
    """Set ``net`` to compute the least-squares linear fit of ``y`` on ``x`` (weighted by ``w``,
    the loss's per-row weights): the first ``d`` units of every layer carry the inputs (shifted
    to stay positive through the ReLUs), the output layer reads the fit from them, and the other
    units start random with zero output weight. Noisy latency data is close to linear in HAT's
    features; training then adds only the curvature the data supports."""
    d = x.shape[1]
    a = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    wt = (w.double() if w is not None else torch.ones_like(y, dtype=torch.float64))
    aw, yw = a * wt, y.double() * wt
    coef = torch.linalg.solve(aw.T @ aw + 1e-6 * torch.eye(d + 1, dtype=torch.float64),
                              aw.T @ yw)[:, 0]
    with torch.no_grad():
        net.first_layer.weight[:d] = torch.eye(d)
        net.first_layer.bias[:d] = LINEAR_SHIFT
        for layer in net.layers:
            layer.weight[:d] = 0.0
            layer.weight[:d, :d] = torch.eye(d)
            layer.bias[:d] = 0.0
        net.predict.weight.zero_()
        net.predict.weight[0, :d] = coef[:d].float()
        net.predict.bias[0] = float(coef[d] - LINEAR_SHIFT * coef[:d].sum())


def _train_member(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, r: Recipe,
                  seed: int, hidden_dim: int, hidden_layer_num: int,
                  progress: Callable[[int, float], None] | None,
                  base: np.ndarray | None = None, base_v: np.ndarray | None = None,
                  ) -> dict[str, np.ndarray]:
    """Train one MLP on normalised x (x / feature_norm) and y (ms / lat_norm); with ``base``
    (``base_v`` on the validation rows) the MLP fits ``y - base`` and is judged on the sum."""
    y_full, yv_full = y, yv
    if base is not None:
        y, yv = y - base, yv - base_v
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = LatencyMLP(x.shape[1], hidden_dim, hidden_layer_num)
    mu, sd = np.zeros(x.shape[1]), np.ones(x.shape[1])
    if r.standardize:  # constant features (e.g. encoder_layer_num) keep scale 1
        mu, sd = x.mean(0), x.std(0)
        sd = np.where(sd > 1e-6, sd, 1.0)
    ym, ys = (float(y.mean()), float(y.std()) + 1e-12) if r.standardize else (0.0, 1.0)
    xt = torch.tensor((x - mu) / sd, dtype=torch.float32)
    yt = torch.tensor((y - ym) / ys, dtype=torch.float32)[:, None]
    # Residual weight (ys/yr)*(yr/y)^(p/2): p=0 plain MSE, p=2 relative error (= ys/y).
    power, yr = LOSS_POWER[r.loss], float(y_full.mean())
    wt = torch.tensor(ys / yr * (yr / y_full) ** (power / 2), dtype=torch.float32)[:, None]
    xvt = torch.tensor((xv - mu) / sd, dtype=torch.float32)
    if r.linear_init:
        _init_as_linear_fit(net, xt, yt, wt if power else None)
    opt_cls = torch.optim.AdamW if r.weight_decay else torch.optim.Adam
    opt = opt_cls(net.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    best, best_err = None, math.inf
    n = xt.shape[0]
    ema = [p.detach().clone() for p in net.parameters()] if r.ema else None
    ema_net = LatencyMLP(x.shape[1], hidden_dim, hidden_layer_num) if r.ema else net

    def val_error(model: LatencyMLP) -> float:
        with torch.no_grad():
            pv = model(xvt)[:, 0].double().numpy() * ys + ym
        res = (pv - yv) / yv_full if r.select_metric == "rel" else pv - yv
        return float(np.mean(res ** 2))

    if r.linear_init and r.select == "best_val" and len(xv):  # the linear start is a candidate
        best_err = val_error(net)
        best = {k: v.detach().clone() for k, v in net.state_dict().items()}
    for step in range(r.steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(r, step)
        idx = torch.randint(0, n, (min(r.bsz, n),), generator=gen)
        diff = net(xt[idx]) - yt[idx]
        if power:
            diff = diff * wt[idx]
        loss = (diff ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, net.parameters()):
                    e.lerp_(p, 1.0 - r.ema)
        last = step == r.steps - 1
        if r.select == "best_val" and len(xv) and ((step + 1) % r.eval_every == 0 or last):
            if ema is not None:
                with torch.no_grad():
                    for e, p in zip(ema, ema_net.parameters()):
                        p.copy_(e)
            err = val_error(ema_net)
            if err < best_err:
                best_err = err
                best = {k: v.detach().clone() for k, v in ema_net.state_dict().items()}
        elif ema is not None and last:
            with torch.no_grad():
                for e, p in zip(ema, ema_net.parameters()):
                    p.copy_(e)
            best = ema_net.state_dict()
        if progress is not None and ((step + 1) % 100 == 0 or last):
            progress(step + 1, loss.item())
    if best is not None:
        net.load_state_dict(best)
    sd_out = {k: v.detach().double().numpy().copy() for k, v in net.state_dict().items()}
    # Fold standardisation into the first and last layers: plain HAT semantics afterwards.
    w0, b0 = sd_out["first_layer.weight"], sd_out["first_layer.bias"]
    sd_out["first_layer.weight"] = w0 / sd[None, :]
    sd_out["first_layer.bias"] = b0 - (w0 / sd[None, :]) @ mu
    sd_out["predict.weight"] = sd_out["predict.weight"] * ys
    sd_out["predict.bias"] = sd_out["predict.bias"] * ys + ym
    return sd_out


def train_predictor(features: np.ndarray, latency_ms: np.ndarray, train_idx: np.ndarray,
                    val_idx: np.ndarray, recipe: Recipe | str = "default", *,
                    feature_norm: Sequence[float] = FEATURE_NORM, lat_norm: float,
                    seed: int = 1, hidden_dim: int = 400, hidden_layer_num: int = 3,
                    progress: Callable[[int, float], None] | None = None,
                    order: np.ndarray | None = None) -> LatencyPredictor:
    """Train a predictor on ``train_idx`` rows (``val_idx`` used only for checkpoint choice).

    ``order``: the rows' measurement order (default: file order), used by ``drift_fit``."""
    r = get_recipe(recipe) if isinstance(recipe, str) else recipe
    fn, ln = check_norms(feature_norm, lat_norm)
    latency_ms = np.asarray(latency_ms, np.float64)
    t0 = time.perf_counter()
    fit_ms, drift = latency_ms, None
    if r.drift_fit:
        fit_ms, drift = _drift_corrected(features, latency_ms, train_idx, val_idx, order, seed)
    x = np.asarray(features, np.float64) / fn
    y = fit_ms / ln
    coef = base = None
    if r.cost_base:  # least squares in ms on the training rows; the MLP learns what is left
        terms = cost_terms(features)
        coef = fit_relative_ridge(terms[train_idx], fit_ms[train_idx], 0.0, relative=False)
        base = terms @ coef / ln
    members = []
    with torch_threads(1):
        for k in range(r.members):
            members.append(_train_member(
                x[train_idx], y[train_idx], x[val_idx], y[val_idx], r, seed * 1000 + k,
                hidden_dim, hidden_layer_num, progress,
                None if base is None else base[train_idx], None if base is None else base[val_idx],
            ))
    meta = {"recipe": asdict(r), "seed": seed, "n_train": int(len(train_idx)),
            "n_val": int(len(val_idx))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = LatencyPredictor(members, fn, ln, meta, cost_coef=coef)
        if drift is not None:  # least-squares scale from drift-free to measured latencies
            p = pred.predict(features[train_idx])
            drift["scale"] = float(np.dot(latency_ms[train_idx], p) / np.dot(p, p))
            meta["drift"] = drift
            pred = combine_predictors([(drift["scale"], pred)], meta=meta)
    pred.meta["train_seconds"] = time.perf_counter() - t0
    return pred


DRIFT_WINDOW = 15  # neighbours on each side in measurement order


def _drift_corrected(features: np.ndarray, latency_ms: np.ndarray, train_idx: np.ndarray,
                     val_idx: np.ndarray, order: np.ndarray | None, seed: int
                     ) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Latencies with the drift divided out on the train+validation rows (neighbour factors
    estimated from those rows alone, in measurement order); too few rows: unchanged."""
    from hat.latency.drift import (  # drift imports this module
        COST_MODEL,
        check_order,
        estimate_drift,
        min_rows,
    )

    rows = np.concatenate([train_idx, val_idx]).astype(int)
    if len(rows) < min_rows(DRIFT_WINDOW):
        return latency_ms, None
    n = len(latency_ms)
    rank = np.arange(n)
    if order is not None:
        rank[check_order(order, n)] = np.arange(n)
    local = np.argsort(rank[rows], kind="stable")
    est = estimate_drift(features[rows], latency_ms[rows], local, lat_norm=1.0,
                         window=DRIFT_WINDOW, seed=seed, recipe=COST_MODEL)
    out = latency_ms.copy()
    out[rows] = latency_ms[rows] / est.factors
    return out, est.summary()


def check_predictor_file(path: str | os.PathLike) -> None:
    """Raise :class:`PredictorError` unless ``path`` holds a HAT-shaped predictor state dict."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise PredictorError(f"{path}: cannot read predictor file ({e})") from None
    check_state_dict(sd, str(path))


def save_scatter(pred_ms: np.ndarray, true_ms: np.ndarray, path: str | os.PathLike,
                 title: str = "") -> Path:
    """Write a small predicted-vs-measured scatter PNG (matplotlib, Agg backend)."""
    from hat.plots import pyplot, save_png

    plt = pyplot()
    m = metrics(pred_ms, true_ms)
    fig, ax = plt.subplots(figsize=(3.6, 3.6), dpi=80)
    lo = float(min(np.min(pred_ms), np.min(true_ms)))
    hi = float(max(np.max(pred_ms), np.max(true_ms)))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="0.9")
    ax.scatter(true_ms, pred_ms, s=5, alpha=0.6)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{title}\nRMSE {m['rmse_ms']:.4g} ms, within ±10%: {m['within10_pct']:.1f}%",
                 fontsize=8)
    ax.tick_params(labelsize=7)
    return save_png(fig, path)
