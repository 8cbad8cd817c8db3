"""``latency_predictor.py``: train (or evaluate) a latency predictor from a latency CSV.

Modes: train with a recipe (default), ``--eval-only`` an existing predictor, ``--fewshot N``
on top of another device's predictor or data. The rows are split 80/10/10 with a seeded
shuffle; the test split is only used for the reported test RMSE (ms), MAPE (%) and share within
+-10%. With ``--json`` the last stdout line is one JSON object. A predicted-vs-measured scatter
plot is written next to the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hat.atomic import check_writable
from hat.cli import run_cli
from hat.config_files import parse_with_configs
from hat.errors import HatConfigError
from hat.latency.predict.fewshot import DATA_METHODS, METHODS
from hat.latency.predict.predictor import FEATURE_NORM, LatencyPredictor

log = logging.getLogger("latency_predictor")
MIN_ROWS = 20  # fewer rows leave the validation and test splits (10% each) one row or none


def build_parser() -> argparse.ArgumentParser:
    """The CLI; YAML config keys are the long option names without dashes
    (:func:`hat.config_files.parse_with_configs` reads them)."""
    p = argparse.ArgumentParser(
        prog="latency_predictor.py", usage="latency_predictor.py --configs=YAML [options]",
        description="Train (or evaluate) a latency predictor from a latency CSV.\n\nexample: "
                    "python latency_predictor.py --configs=configs/wmt14.en-de/"
                    "latency_predictor/cpu_epyc.yml --lat-dataset-path latency_dataset/measured/"
                    "wmt14ende_cpu_epyc_all.csv --ckpt-path latency_dataset/measured/"
                    "wmt14ende_cpu_epyc.pt",
        epilog="Every option is also a key of the --configs YAML file (lat-norm: 8,\n"
               "feature-norm: [...], json: true). The command line overrides the YAML, which\n"
               "overrides the defaults.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--configs", help="YAML config (HAT's latency_predictor keys)")
    a("--lat-dataset-path", required=True, help="latency CSV (HAT format)")
    a("--ckpt-path", required=True, help="predictor checkpoint to write (or read)")
    a("--feature-norm", type=float, nargs="+",
      default=list(FEATURE_NORM), help="per-feature divisors (HAT's)")
    a("--lat-norm", type=float, required=True, help="latency divisor (ms)")
    a("--feature-dim", type=int, default=10, help="must be 10")
    a("--hidden-dim", type=int, default=400)
    a("--hidden-layer-num", type=int, default=3)
    a("--train-steps", type=int, default=5000, help="HAT recipe: steps")
    a("--bsz", type=int, default=128, help="HAT recipe: batch size")
    a("--lr", type=float, default=1e-5, help="HAT recipe: learning rate")
    a("--recipe", choices=["default", "mlp", "hat"], default="default",
      help="'hat' = HAT's recipe (train-steps/bsz/lr above); 'default' = ours (HAT's MLP "
           "on a linear cost-term base; HAT's code cannot load the file); 'mlp' = ours "
           "without the base (a plain HAT state dict)")
    a("--seed", type=int, default=1, help="split and training seed")
    a("--max-steps", type=int, default=None, help="cap on training steps (quick runs)")
    a("--members", type=int, default=None,
      help="ensemble size (averaged networks, each a HAT MLP; default 1). More members "
           "predict a little better and proportionally slower")
    a("--eval-only", action="store_true", help="evaluate --ckpt-path, do not train")
    a("--fewshot", type=int, default=None, metavar="N",
      help="fit from N training rows on top of --source-ckpt (new hardware)")
    a("--source-ckpt", default=None, help="few-shot: predictor of another device")
    a("--source-dataset", default=None,
      help="few-shot: latency CSV of another device (adds the 'components' method: its "
           "encoder and decoder predictors, reweighted on the N rows)")
    a("--fewshot-method", choices=[*METHODS, *DATA_METHODS], default=None,
      help="few-shot: force a method (default: chosen by cross-validation on the rows)")
    a("--source-lat-norm", type=float, default=None,
      help="few-shot: lat-norm of a plain (sidecar-less) --source-ckpt")
    a("--drift-correct", choices=["none", "neighbours"], default="none",
      help="'neighbours': divide each row by the device's speed around it, estimated from "
           "its neighbours in measurement order (hat/latency/predict/drift.py); the summary "
           "then also reports accuracy on the uncorrected labels")
    a("--drift-window", type=int, default=15, help="neighbours on each side")
    a("--plot-path", default=None, help="scatter PNG (default: next to the checkpoint)")
    a("--no-plot", action="store_true")
    a("--json", action="store_true", help="last stdout line = JSON summary")
    a("-v", "--verbose", action="store_true")
    return p


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse arguments, train or evaluate, print the report; returns the summary dict."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_configs(build_parser(), argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    import contextlib

    from hat.runstate import exclusive

    with contextlib.ExitStack() as held:
        def claim() -> None:  # once the inputs are checked: ckpt-path is this process's
            if not args.eval_only and args.ckpt_path:
                held.enter_context(exclusive(args.ckpt_path,
                                             "training a predictor into this ckpt-path"))

        return train_or_evaluate(args, claim)


def train_or_evaluate(args: Any, claim: Callable[[], None]) -> dict[str, Any]:
    """:func:`run` after parsing; ``claim()`` takes ckpt-path once the inputs are checked."""
    from hat.latency.predict.drift import measurement_order
    from hat.latency.predict.fewshot import MIN_ROWS as FEWSHOT_MIN_ROWS
    from hat.latency.predict.fit import split_indices
    from hat.latency.predict.predictor import check_norms

    if args.feature_dim != 10:
        raise HatConfigError(f"feature-dim must be 10 (HAT's features), got {args.feature_dim}")
    fn, ln = check_norms(args.feature_norm, args.lat_norm, args.configs)
    if args.fewshot is not None and args.fewshot < FEWSHOT_MIN_ROWS:
        raise HatConfigError(f"--fewshot must be at least {FEWSHOT_MIN_ROWS} (training rows to "
                             f"fit on), got {args.fewshot}")
    ckpt = Path(args.ckpt_path)
    plot = None if args.no_plot else Path(args.plot_path or ckpt.with_name(
        ckpt.stem + "_scatter.png"))
    if not args.eval_only:  # fail before training, not after it
        check_writable(ckpt, "ckpt-path")
    if plot is not None:
        check_writable(plot, "plot-path" if args.plot_path else
                       "scatter plot (next to ckpt-path unless --plot-path or --no-plot)")
    x, y, extra = load_checked(args.lat_dataset_path)
    order = measurement_order(extra, len(y))
    unique = len(np.unique(x, axis=0))
    if unique < len(y):
        log.warning("%s: %d of its %d rows repeat a SubTransformer of an earlier row (%d unique); "
                    "rows of one SubTransformer are kept in one split, so test rows are never "
                    "copies of training rows", args.lat_dataset_path, len(y) - unique, len(y),
                    unique)
    tr, va, te = split_indices(len(y), args.seed, groups=x)
    if len(y) < MIN_ROWS or not (len(va) and len(te)):
        raise HatConfigError(
            f"{args.lat_dataset_path}: {len(y)} rows are too few to train and test a predictor "
            f"(the 80/10/10 split gives {len(tr)} train, {len(va)} validation, {len(te)} test "
            f"rows); at least {MIN_ROWS} rows are needed (HAT used 2000)")
    if args.fewshot is not None and args.fewshot > len(tr):
        raise HatConfigError(
            f"--fewshot {args.fewshot}: {args.lat_dataset_path} has only {len(tr)} training "
            f"rows (80% of its {len(y)} rows; the rest are kept for validation and test); use "
            f"--fewshot {len(tr)} or less, or a larger dataset")
    summary: dict[str, Any] = {"seed": args.seed, "n_val": int(len(va)),
                               "drift_correct": args.drift_correct}
    y_measured = y
    if args.drift_correct == "neighbours":
        y = drift_corrected(args, x, y, order, ln, summary)
    claim()
    if args.eval_only:
        log.info("evaluating %s on %d test rows of %s", ckpt, len(te), args.lat_dataset_path)
        pred = LatencyPredictor.load(ckpt, feature_norm=fn, lat_norm=ln)
        summary.update(mode="eval-only", n_train=int(len(tr)))
    elif args.fewshot is not None:
        pred = fit_fewshot_mode(args, x, y, tr, ln, ckpt, summary)
    else:
        pred = train_mode(args, x, y, tr, va, fn, ln, order, ckpt, summary)
    report(args, pred, x, y, y_measured, va, te, ckpt, plot, summary)
    return summary


def drift_corrected(args: Any, x: np.ndarray, y: np.ndarray, order: np.ndarray, ln: float,
                    summary: dict[str, Any]) -> np.ndarray:
    """``--drift-correct neighbours``: the latencies with the device's drift divided out."""
    from hat.latency.predict.drift import estimate_drift
    from hat.latency.predict.fit import fit_recipe, mlp_fitter

    log.info("estimating drift from neighbouring rows (window %d)", args.drift_window)
    steps = 1500 if args.max_steps is None else min(1500, args.max_steps)
    try:
        est = estimate_drift(x, y, order, fitter=mlp_fitter(fit_recipe("mlp", steps=steps), ln),
                             window=args.drift_window, seed=args.seed)
    except ValueError as e:
        raise HatConfigError(f"{args.lat_dataset_path}: --drift-correct: {e}") from None
    summary["drift"] = est.summary()
    log.info("slowdown factors %.3f-%.3f (5-95%%: %.3f-%.3f)", *(
        summary["drift"][k] for k in ("factor_min", "factor_max", "factor_p05", "factor_p95")))
    return y / est.factors


def fit_fewshot_mode(args: Any, x: np.ndarray, y: np.ndarray, tr: np.ndarray, ln: float,
                     ckpt: Path, summary: dict[str, Any]) -> LatencyPredictor:
    """``--fewshot N``: a predictor from N rows on top of another device's predictor/data."""
    from hat.latency.predict.fewshot import component_predictors, fit_fewshot
    from hat.latency.predict.fit import fit_recipe

    if not (args.source_ckpt or args.source_dataset):
        raise HatConfigError("--fewshot needs --source-ckpt (another device's predictor) "
                             "and/or --source-dataset (its latency CSV)")
    src = parts = None
    if args.source_ckpt:
        src = LatencyPredictor.load(args.source_ckpt, lat_norm=args.source_lat_norm)
    if args.source_dataset:
        log.info("training encoder and decoder predictors on %s", args.source_dataset)
        sx, _, sextra = load_checked(args.source_dataset)
        r = fit_recipe("default")
        if args.max_steps is not None:
            r = fit_recipe("default", steps=min(r.steps, args.max_steps))
        parts = component_predictors(sx, sextra["latency_mean_encoder"],
                                     sextra["latency_mean_decoder"], ln, seed=args.seed,
                                     recipe=r)
    shots = tr[: args.fewshot]
    log.info("few-shot: %d rows on top of %s", len(shots),
             " and ".join(a for a in (args.source_ckpt, args.source_dataset) if a))
    try:
        pred = fit_fewshot(src, x[shots], y[shots], seed=args.seed,
                           method=args.fewshot_method, components=parts)
    except ValueError as e:
        raise HatConfigError(f"--fewshot: {e}") from None
    pred.meta["dataset"] = dataset_record(args.lat_dataset_path)
    pred.save(ckpt)
    summary.update(mode="fewshot", n_train=int(len(shots)), method=pred.meta.get("method"))
    return pred


def train_mode(args: Any, x: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
               fn: Sequence[float], ln: float, order: np.ndarray, ckpt: Path,
               summary: dict[str, Any]) -> LatencyPredictor:
    """Train a predictor with ``--recipe`` on the training split and save it."""
    from hat.latency.predict.fit import fit_recipe, train_predictor

    over: dict[str, Any] = {}
    if args.recipe == "hat":
        over = {"steps": args.train_steps, "bsz": args.bsz, "lr": args.lr}
    if args.members is not None:
        if args.members < 1:
            raise HatConfigError(f"members must be >= 1, got {args.members}")
        over["members"] = args.members
    recipe = fit_recipe(args.recipe, **over)
    if args.max_steps is not None:
        recipe = fit_recipe(args.recipe, **{**over, "steps": min(recipe.steps, args.max_steps)})
    log.info("training (%s recipe, %d steps, %d member(s), seed %d) on %d rows, "
             "%d validation rows", recipe.name, recipe.steps, recipe.members, args.seed,
             len(tr), len(va))

    def progress(step: int, loss: float) -> None:
        if step % 1000 == 0 or step == recipe.steps:
            log.info("step %d/%d  train loss %.3g", step, recipe.steps, loss)

    pred = train_predictor(
        x, y, tr, va, recipe, feature_norm=fn, lat_norm=ln, seed=args.seed,
        hidden_dim=args.hidden_dim, hidden_layer_num=args.hidden_layer_num,
        progress=progress, order=order,
    )
    if "drift" in pred.meta:
        d = pred.meta["drift"]
        log.info("drift in the training rows: slowdown factors %.3f-%.3f, %d rows changed by "
                 "> 2%%; scale to measured latencies %.4f", d["factor_min"], d["factor_max"],
                 d["rows_changed_over_2pct"], d["scale"])
    pred.meta["dataset"] = dataset_record(args.lat_dataset_path)
    pred.save(ckpt)
    from hat.latency.measure.timing import DEPLOYMENTS

    log.info("saved %s (+ %s); its latencies are for lat-deployment %s: %s", ckpt,
             ckpt.name + ".json", pred.deployment, DEPLOYMENTS.get(pred.deployment, "?"))
    summary.update(mode="train", recipe=recipe.name, members=recipe.members,
                   n_train=int(len(tr)), train_seconds=round(pred.meta["train_seconds"], 2))
    return pred


def report(args: Any, pred: LatencyPredictor, x: np.ndarray, y: np.ndarray,
           y_measured: np.ndarray, va: np.ndarray, te: np.ndarray, ckpt: Path,
           plot: Path | None, summary: dict[str, Any]) -> None:
    """Test and validation metrics, the scatter plot, the printed report (one for every mode)."""
    from hat.latency.predict.report import metrics, save_scatter

    p_te = pred.predict(x[te])
    m_te = metrics(p_te, y[te])
    m_va = metrics(pred.predict(x[va]), y[va])
    summary.update(
        test_rmse_ms=m_te["rmse_ms"], test_mape_pct=m_te["mape_pct"],
        test_within10_pct=m_te["within10_pct"], n_test=int(len(te)),
        val_rmse_ms=m_va["rmse_ms"], val_within10_pct=m_va["within10_pct"],
        ckpt_path=str(ckpt), lat_dataset_path=str(args.lat_dataset_path),
    )
    if args.drift_correct != "none":
        m_raw = metrics(p_te, y_measured[te])
        summary.update(test_rmse_ms_uncorrected=m_raw["rmse_ms"],
                       test_within10_pct_uncorrected=m_raw["within10_pct"])
    if plot is not None:
        try:
            save_scatter(p_te, y[te], plot, title=f"{Path(args.lat_dataset_path).stem} (test)")
            summary["plot_path"] = str(plot)
        except OSError as e:
            log.warning("could not write the scatter plot %s: %s", plot, e)
    print(f"test RMSE {m_te['rmse_ms']:.3f} ms | MAPE {m_te['mape_pct']:.2f}% | "
          f"within +-10% {m_te['within10_pct']:.1f}%  (n_test={len(te)}, seed={args.seed})")
    if args.drift_correct != "none":
        print(f"  on the uncorrected latencies: RMSE {summary['test_rmse_ms_uncorrected']:.3f} ms"
              f" | within +-10% {summary['test_within10_pct_uncorrected']:.1f}%")
    if args.json:
        print(json.dumps(summary, sort_keys=True))


def load_checked(path: str) -> tuple[Any, Any, dict[str, Any]]:
    """``(features, latency_ms, extra)`` of a latency CSV whose latencies are plausible (an
    error for rows 100x off the median, a logged warning for rows 10x off)."""
    from hat.latency.csvio import check_latency_spread, latency_arrays, read_latency_table

    if not Path(path).is_file():
        raise HatConfigError(f"{path}: latency CSV not found; {how_to_get_dataset(path)}")
    table = read_latency_table(path)
    warning = check_latency_spread(table, path)
    if warning:
        log.warning("%s", warning)
    return latency_arrays(table)


def how_to_get_dataset(path: str) -> str:
    """The command that creates the latency CSV ``path``."""
    from hat.latency.csvio import HAT_LATENCY_DATASETS

    name = Path(path).name.removesuffix("_all.csv")
    if name in HAT_LATENCY_DATASETS:
        return (f"it is HAT's published dataset: fetch it with `python scripts/"
                f"fetch_hat_latency.py --names {name}` (--mirror DIR to copy it from a local "
                "folder), or measure your own with latency_dataset.py")
    return ("measure it with `python latency_dataset.py --configs=configs/<task>/latency_dataset/"
            "<hardware>.yml` (it writes latency_dataset/measured/) and pass that file with "
            "--lat-dataset-path")


def dataset_record(csv_path: str) -> dict[str, Any]:
    """What the predictor was trained on: the CSV's name and, from its sidecar, how and where
    it was measured (protocol, machine, model, sampling space), so that a search can measure
    its winners the same way and see when it runs on another machine."""
    rec: dict[str, Any] = {"csv": Path(csv_path).name}
    side = Path(str(csv_path) + ".meta.json")
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except ValueError:
            return rec
        for key in ("machine", "protocol", "model", "space", "noise"):
            if key in meta:
                rec[key] = meta[key]
    return rec


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: clean one-line errors (``error: ...``, exit status 2) for bad configs/data."""
    def body() -> None:
        run(argv)

    return run_cli(body)

