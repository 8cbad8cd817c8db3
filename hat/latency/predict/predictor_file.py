"""Latency-predictor files: saving and loading a :class:`~hat.latency.predict.predictor.
LatencyPredictor` (a plain HAT state dict, ``<path>.members.pt`` for further ensemble members
and a JSON sidecar ``<path>.json`` with the normalisation and metadata), HAT's plain ``.pt``
files, and the errors for files that are not predictors.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from hat.atomic import atomic_torch_save, atomic_write_json
from hat.latency.predict.costterms import COST_TERMS
from hat.latency.predict.network import (
    FEATURE_NORM,
    PredictorError,
    check_norms,
    check_state_dict,
)

if TYPE_CHECKING:
    from hat.latency.predict.predictor import LatencyPredictor

P = TypeVar("P", bound="LatencyPredictor")

SIDECAR_SUFFIX = ".json"


COST_KEY = "cost.coef"  # cost-term coefficients (ms) inside a saved predictor


class NotAPredictorError(PredictorError):
    """A readable model checkpoint of another kind (``arch`` says which) given as a predictor."""

    def __init__(self, message: str, arch: str) -> None:
        super().__init__(message)
        self.arch = arch

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (str(self), self.arch)


def not_a_predictor(path: Path) -> NotAPredictorError | None:
    """When ``path`` (which is no plain state dict) is a fairseq/HAT model checkpoint: the error
    saying so and what it is; else None. Read with the checkpoint reader that runs no code."""
    from hat.checkpoint import checkpoint_args, read_checkpoint

    try:
        arch = str(checkpoint_args(read_checkpoint(path), path).arch)
    except Exception:  # noqa: BLE001 - not a model checkpoint either: the caller's error stands
        return None
    if arch.startswith("transformersuper"):
        kind = "a SuperTransformer training checkpoint"
    elif arch == "hat_subtransformer":
        kind = "a standalone SubTransformer exported by hat.export"
    else:
        kind = "a fairseq model checkpoint"
    return NotAPredictorError(
        f"{path}: not a latency predictor: it is {kind} (arch {arch}, with fairseq's training "
        "arguments); a latency predictor is the small state dict that latency_predictor.py "
        f"writes (with its {SIDECAR_SUFFIX} sidecar)", arch)


def _torch_load_problem(e: Exception) -> str:
    """torch.load's weights-only refusal in a few words (its advice to turn off weights_only
    is not for predictors: they are plain state dicts)."""
    text = str(e)
    marker = "Unsupported global: GLOBAL "
    if marker in text:
        name = text.split(marker, 1)[1].split(" ", 1)[0]
        return f"its pickle holds {name}, which a predictor's plain state dict of tensors has not"
    return text.splitlines()[0] if text else type(e).__name__


def sidecar_path(path: str | os.PathLike) -> Path:
    """``foo.pt`` -> ``foo.pt.json``."""
    return Path(str(path) + SIDECAR_SUFFIX)


def save_predictor(pred: LatencyPredictor, path: str | os.PathLike) -> Path:
    """Save ``pred``'s member 0 as a plain HAT state dict at ``path`` (HAT's code can load it), any
    further ensemble members at ``<path>.members.pt``, and a JSON sidecar ``<path>.json``
    with feature_norm / lat_norm / recipe / metrics. All writes are atomic.

    Cost-term coefficients go into ``path`` too (key ``cost.coef``): HAT's strict loading
    then refuses the file instead of silently predicting only the MLP part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = pred.state_dict(0) if pred.members else {}
    if pred.cost_coef is not None:
        sd[COST_KEY] = torch.from_numpy(pred.cost_coef.copy())
    atomic_torch_save(sd, path)
    extra = Path(str(path) + ".members.pt")
    if len(pred.members) > 1:
        atomic_torch_save([pred.state_dict(i) for i in range(1, len(pred.members))], extra)
    elif extra.exists():
        extra.unlink()
    side = {
        "format": "hat-latency-predictor",
        "version": 1,
        "feature_norm": pred.feature_norm.tolist(),
        "lat_norm": pred.lat_norm,
        "n_members": len(pred.members),
        "cost_terms": list(COST_TERMS) if pred.cost_coef is not None else None,
        "meta": pred.meta,
    }
    atomic_write_json(sidecar_path(path), side, indent=2)
    return path


def load_predictor(cls: type[P], path: str | os.PathLike,
                   feature_norm: Sequence[float] | None = None,
                   lat_norm: float | None = None) -> P:
    """Load our checkpoint (plain state dict + sidecar) or one of HAT's plain ``.pt`` files as a
    ``cls`` (:class:`~hat.latency.predict.predictor.LatencyPredictor`).

    Without a sidecar, ``lat_norm`` must be given (``feature_norm`` defaults to HAT's). With
    a sidecar, given norms must agree with the stored ones.
    """
    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"{path}: predictor file not found")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        other = not_a_predictor(path)
        if other is not None:
            raise other from None
        raise PredictorError(f"{path}: cannot read predictor file "
                             f"({_torch_load_problem(e)})") from None
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


def check_predictor_file(path: str | os.PathLike) -> None:
    """Raise :class:`PredictorError` unless ``path`` holds a HAT-shaped predictor state dict."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise PredictorError(f"{path}: cannot read predictor file ({e})") from None
    check_state_dict(sd, str(path))
