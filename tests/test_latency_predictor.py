"""Latency predictor: HAT compatibility, errors, training, few-shot, fetch script and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hat.errors import HatConfigError
from hat.latency.csvio import load_latency_csv, write_latency_csv
from hat.latency.predict.costterms import cost_terms
from hat.latency.predict.fewshot import component_predictors, fit_fewshot
from hat.latency.predict.fit import fit_recipe, split_indices, train_predictor
from hat.latency.predict.predictor import FEATURE_NORM, LatencyMLP, LatencyPredictor, PredictorError
from hat.latency.predict.report import metrics
from hat.paths import ROOT
from tests.conftest import GUARD_S, load_script, synthetic_features

REF = Path(os.environ.get("HAT_REFERENCE_DIR", ROOT.parent / "shared" / "hat-reference"))
LAT_NORM = {"titanxp": 200.0, "xeon": 300.0, "raspberrypi": 5000.0}
NAMES = [
    "wmt14ende_cpu_raspberrypi", "wmt14ende_cpu_xeon", "wmt14ende_gpu_titanxp",
    "iwslt14deen_gpu_titanxp",
]
HAVE_REF = (REF / "latency").is_dir() and (REF / "predictors").is_dir()
needs_ref = pytest.mark.skipif(not HAVE_REF, reason=f"HAT reference data not found at {REF}")


def _lat_norm(name: str) -> float:
    return LAT_NORM[name.rsplit("_", 1)[1]]


def _numpy_mlp(sd: dict[str, torch.Tensor], x: np.ndarray, fn, ln: float) -> np.ndarray:
    """Straightforward float64 evaluation of HAT's MLP."""
    p = {k: v.double().numpy() for k, v in sd.items()}
    h = np.maximum(0, (x / np.asarray(fn)) @ p["first_layer.weight"].T + p["first_layer.bias"])
    for i in range(3):
        h = np.maximum(0, h @ p[f"layers.{i}.weight"].T + p[f"layers.{i}.bias"])
    return (h @ p["predict.weight"].T + p["predict.bias"])[:, 0] * ln


def _synthetic(n: int = 600, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = synthetic_features(n, rng)
    y = 5 + x[:, 5] * (10 + x[:, 6] / 200 + x[:, 4] / 40) + x[:, 2] / 300
    return x, y * rng.normal(1, 0.01, n)


def _random_sd(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return LatencyMLP().state_dict()


# --------------------------------------------------------------------------- HAT compatibility
@needs_ref
@pytest.mark.parametrize("name", NAMES)
def test_hat_predictor_matches_numpy(name: str) -> None:
    pt = REF / "predictors" / f"{name}.pt"
    x, y, _ = load_latency_csv(REF / "latency" / f"{name}_all.csv")
    pred = LatencyPredictor.load(pt, feature_norm=FEATURE_NORM, lat_norm=_lat_norm(name))
    sd = torch.load(pt, map_location="cpu", weights_only=True)
    want = _numpy_mlp(sd, x, FEATURE_NORM, _lat_norm(name))
    got = pred.predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3 * np.abs(want).mean())
    net = LatencyMLP()
    net.load_state_dict(sd)  # our module loads HAT's state dict as is
    with torch.no_grad():
        tw = net(torch.tensor(x / np.asarray(FEATURE_NORM), dtype=torch.float32))[:, 0]
    np.testing.assert_allclose(tw.numpy() * _lat_norm(name), want, rtol=1e-4, atol=1e-2)
    assert pred.predict_one(x[0]) == pytest.approx(want[0], rel=1e-4)
    # HAT's shipped predictors are decent on their own data (sanity of the loading)
    assert metrics(got, y)["mape_pct"] < 10


# --------------------------------------------------------------------------- errors
def test_wrong_shape_names_file_key_and_shapes(tmp_path: Path) -> None:
    sd = _random_sd()
    sd["layers.1.weight"] = torch.zeros(400, 300)
    bad = tmp_path / "bad.pt"
    torch.save(sd, bad)
    msg = r"bad\.pt.*'layers\.1\.weight'.*\(400, 300\).*\(400, 400\)"
    with pytest.raises(PredictorError, match=msg):
        LatencyPredictor.load(bad, lat_norm=200)
    sd = _random_sd()
    del sd["predict.bias"]
    torch.save(sd, bad)
    with pytest.raises(PredictorError, match=r"bad\.pt: missing key 'predict\.bias'"):
        LatencyPredictor.load(bad, lat_norm=200)
    sd = _random_sd()
    sd["first_layer.weight"] = torch.zeros(400, 12)
    torch.save(sd, bad)
    msg = r"'first_layer\.weight' has shape \(400, 12\), expected \(400, 10\)"
    with pytest.raises(PredictorError, match=msg):
        LatencyPredictor.load(bad, lat_norm=200)
    torch.save({"foo": torch.zeros(1)}, bad)
    with pytest.raises(PredictorError, match="first_layer.weight"):
        LatencyPredictor.load(bad, lat_norm=200)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(PredictorError, match=r"junk\.pt: cannot read"):
        LatencyPredictor.load(tmp_path / "junk.pt", lat_norm=200)
    with pytest.raises(PredictorError, match="not found"):
        LatencyPredictor.load(tmp_path / "none.pt", lat_norm=200)


def test_norm_errors(tmp_path: Path) -> None:
    sd = _random_sd()
    with pytest.raises(PredictorError, match="feature-norm must have 10 values.*got 9"):
        LatencyPredictor([sd], FEATURE_NORM[:9], 200)
    for bad in (0, -5):
        with pytest.raises(PredictorError, match="lat-norm must be > 0"):
            LatencyPredictor([sd], FEATURE_NORM, bad)
    with pytest.raises(PredictorError, match="feature-norm values must be finite and > 0"):
        LatencyPredictor([sd], (0,) + FEATURE_NORM[1:], 200)
    p = tmp_path / "plain.pt"
    torch.save(sd, p)
    with pytest.raises(PredictorError, match="needs lat-norm"):
        LatencyPredictor.load(p)
    assert issubclass(PredictorError, HatConfigError) and issubclass(PredictorError, ValueError)


def test_save_load_round_trip_and_norm_mismatch(tmp_path: Path) -> None:
    x, _ = _synthetic(50)
    pred = LatencyPredictor([_random_sd(0), _random_sd(1)], FEATURE_NORM, 300, {"recipe": "x"})
    path = pred.save(tmp_path / "p.pt")
    # the main file is a plain HAT state dict (member 0)
    plain = torch.load(path, weights_only=True)
    assert sorted(plain) == sorted(_random_sd())
    back = LatencyPredictor.load(path)
    np.testing.assert_allclose(back.predict(x), pred.predict(x), rtol=1e-6)
    assert back.lat_norm == 300 and back.meta == {"recipe": "x"} and len(back.members) == 2
    LatencyPredictor.load(path, feature_norm=FEATURE_NORM, lat_norm=300)  # agreeing config: ok
    with pytest.raises(PredictorError, match=r"stored lat_norm 300.0 .*disagrees.*lat-norm 200"):
        LatencyPredictor.load(path, lat_norm=200)
    fn = list(FEATURE_NORM)
    fn[0] = 512
    with pytest.raises(PredictorError, match="stored feature_norm.*disagrees"):
        LatencyPredictor.load(path, feature_norm=fn)
    with pytest.raises(ValueError, match=r"shape \[N, 10\]"):
        pred.predict(np.zeros((3, 9)))


# --------------------------------------------------------------------------- training
def test_training_synthetic_beats_mean_and_hat_fold_is_exact() -> None:
    x, y = _synthetic()
    tr, va, te = split_indices(len(y), 0)
    assert len(tr) == 480 and len(va) == 60 and len(te) == 60
    assert len(set(tr) | set(va) | set(te)) == len(y)
    np.testing.assert_array_equal(split_indices(len(y), 0)[2], te)  # seeded
    pred = train_predictor(x, y, tr, va, fit_recipe("mlp", steps=150), lat_norm=200, seed=0)
    assert pred.cost_coef is None
    m = metrics(pred.predict(x[te]), y[te])
    base = metrics(np.full(len(te), y[tr].mean()), y[te])
    assert m["rmse_ms"] < 0.3 * base["rmse_ms"]
    # the exported member is a plain HAT MLP (standardisation folded in)
    net = LatencyMLP()
    net.load_state_dict(pred.state_dict())
    with torch.no_grad():
        out = net(torch.tensor(x[te] / np.asarray(FEATURE_NORM), dtype=torch.float32))[:, 0] * 200
    np.testing.assert_allclose(out.numpy(), pred.predict(x[te]), rtol=1e-3)
    # same seed, same result
    again = train_predictor(x, y, tr, va, fit_recipe("mlp", steps=150), lat_norm=200, seed=0)
    np.testing.assert_allclose(again.predict(x[te]), pred.predict(x[te]), rtol=1e-5)
    # the default recipe: the same kind of member network plus the cost-term linear model
    hyb = train_predictor(x, y, tr, va, fit_recipe("default", steps=150), lat_norm=200, seed=0)
    net.load_state_dict(hyb.state_dict())
    with torch.no_grad():
        mlp = net(torch.tensor(x[te] / np.asarray(FEATURE_NORM), dtype=torch.float32))[:, 0] * 200
    np.testing.assert_allclose(mlp.numpy() + cost_terms(x[te]) @ hyb.cost_coef,
                               hyb.predict(x[te]), rtol=1e-3)


@needs_ref
def test_training_on_reference_csv_beats_mean_baseline() -> None:
    x, y, _ = load_latency_csv(REF / "latency" / "wmt14ende_gpu_titanxp_all.csv")
    tr, va, te = split_indices(len(y), 1)
    pred = train_predictor(x, y, tr, va, fit_recipe("default", steps=300), lat_norm=200, seed=1)
    m = metrics(pred.predict(x[te]), y[te])
    base = metrics(np.full(len(te), y[tr].mean()), y[te])
    assert m["rmse_ms"] < 0.4 * base["rmse_ms"], (m, base)
    assert m["within10_pct"] > 2 * base["within10_pct"]


def test_fewshot_fits_scaled_device(tmp_path: Path) -> None:
    x, y = _synthetic(800, seed=3)
    tr, va, te = split_indices(len(y), 0)
    src = train_predictor(x, y, tr, va, fit_recipe("default", steps=150), lat_norm=200, seed=0)
    y2 = 3.0 * y + 40.0  # "new hardware": slower, with a fixed overhead
    few = fit_fewshot(src, x[tr[:50]], y2[tr[:50]], seed=0, methods=("scale", "affine"))
    m = metrics(few.predict(x[te]), y2[te])
    assert m["within10_pct"] > 90, m
    assert few.meta["method"] == "affine" and few.meta["n_rows"] == 50  # CV sees the offset
    assert set(few.meta["cv_mse_rel"]) == {"scale", "affine"}
    tuned = fit_fewshot(src, x[tr[:50]], y2[tr[:50]], seed=0, method="finetune")
    assert metrics(tuned.predict(x[te]), y2[te])["within10_pct"] > 90
    back = LatencyPredictor.load(few.save(tmp_path / "few.pt"))
    np.testing.assert_allclose(back.predict(x[te]), few.predict(x[te]), rtol=1e-5)
    with pytest.raises(ValueError, match="at least"):
        fit_fewshot(src, x[:2], y2[:2])


@pytest.mark.slow
def test_fewshot_components_reweights_encoder_and_decoder(tmp_path: Path) -> None:
    x, _ = _synthetic(800, seed=4)
    enc = 2 + x[:, 2] / 150 + x[:, 0] / 100  # the other device: encoder and decoder latency
    dec = 5 + x[:, 5] * (10 + x[:, 6] / 200 + x[:, 4] / 40)
    y_new = 4.0 * enc + 0.5 * dec  # new hardware: a much slower encoder, a faster decoder
    tr, va, te = split_indices(len(enc), 0)
    total_src = train_predictor(x, enc + dec, tr, va, fit_recipe("default", steps=200),
                                lat_norm=200, seed=0)
    parts = component_predictors(x[tr], enc[tr], dec[tr], 200, seed=0,
                                 recipe=fit_recipe("default", steps=200))
    shots = tr[:50]
    few = fit_fewshot(total_src, x[shots], y_new[shots], seed=0, components=parts)
    assert few.meta["method"] == "components", few.meta["cv_mse_rel"]
    assert few.meta["a_encoder"] == pytest.approx(4.0, rel=0.15)
    assert few.meta["b_decoder"] == pytest.approx(0.5, rel=0.15)
    m = metrics(few.predict(x[te]), y_new[te])
    affine = fit_fewshot(total_src, x[shots], y_new[shots], seed=0, method="affine")
    assert m["within10_pct"] > 95 and m["rmse_ms"] < 0.5 * metrics(
        affine.predict(x[te]), y_new[te])["rmse_ms"], m
    back = LatencyPredictor.load(few.save(tmp_path / "few.pt"))  # saves as a plain ensemble
    np.testing.assert_allclose(back.predict(x[te]), few.predict(x[te]), rtol=1e-5)
    with pytest.raises(ValueError, match="needs the other device's dataset"):
        fit_fewshot(total_src, x[shots], y_new[shots], method="components")
    with pytest.raises(ValueError, match="predictor or dataset"):
        fit_fewshot(None, x[shots], y_new[shots])


# --------------------------------------------------------------------------- fetch script
def _load_fetch():
    return load_script("scripts/fetch_hat_latency.py")


@needs_ref
def test_fetch_from_mirror(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fetch = _load_fetch()
    out = tmp_path / "latency_dataset"
    assert fetch.main(["--mirror", str(REF), "--out", str(out)]) == 0
    for name in NAMES:
        csv_path = out / f"{name}_all.csv"
        assert csv_path.read_bytes() == (REF / "latency" / f"{name}_all.csv").read_bytes()
        assert (out / "predictors" / "hat" / f"{name}.pt").is_file()
    assert not list(out.rglob("*.part"))
    assert fetch.main(["--mirror", str(REF), "--out", str(out)]) == 0  # idempotent
    assert "exists" in capsys.readouterr().out


def test_fetch_rejects_invalid_csv(tmp_path: Path) -> None:
    fetch = _load_fetch()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "wmt14ende_cpu_xeon_all.csv").write_text("encoder_embed_dim,oops\n1,2\n")
    out = tmp_path / "out"
    rc = fetch.main(["--mirror", str(mirror), "--out", str(out), "--names", "wmt14ende_cpu_xeon",
                     "--no-predictors"])
    assert rc == 1 and not (out / "wmt14ende_cpu_xeon_all.csv").exists()
    rc = fetch.main(["--mirror", str(mirror), "--out", str(out), "--names", "nonexistent"])
    assert rc == 1


# --------------------------------------------------------------------------- CLI
def _tiny_csv(tmp_path: Path) -> Path:
    x, y = _synthetic(300, seed=5)
    lat = np.c_[y * 0.05, y * 0.95, np.full((len(y), 2), 0.1)]
    p = tmp_path / "tiny_all.csv"
    write_latency_csv(p, x, lat)
    return p


def _config(tmp_path: Path, csv_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(
        f"lat-dataset-path: {csv_path}\nckpt-path: {tmp_path / 'pred' / 'p.pt'}\n"
        "feature-norm: [640, 6, 2048, 6, 640, 6, 2048, 6, 6, 2]\nlat-norm: 200\n"
        "feature-dim: 10\nhidden-dim: 400\nhidden-layer-num: 3\ntrain-steps: 5000\nbsz: 128\n"
        f"lr: 1.0e-5\nrecipe: default\nseed: 1\n{extra}"
    )
    return cfg


@pytest.mark.slow
def test_cli_json_last_line_subprocess(tmp_path: Path) -> None:
    cfg = _config(tmp_path, _tiny_csv(tmp_path))
    r = subprocess.run(
        [sys.executable, str(ROOT / "latency_predictor.py"), f"--configs={cfg}", "--json",
         "--max-steps", "100", "--seed", "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=GUARD_S, check=False,
    )
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("test_rmse_ms", "test_mape_pct", "test_within10_pct", "n_train", "n_test", "seed"):
        assert key in last
    assert last["seed"] == 3 and last["n_train"] == 240 and last["n_test"] == 30
    assert (tmp_path / "pred" / "p.pt").is_file() and (tmp_path / "pred" / "p.pt.json").is_file()
    assert (tmp_path / "pred" / "p_scatter.png").is_file()


def _cli():
    return load_script("latency_predictor.py")


def test_cli_eval_only_and_hat_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli()
    cfg = _config(tmp_path, _tiny_csv(tmp_path))
    s1 = cli.run([f"--configs={cfg}", "--recipe", "hat", "--max-steps", "50", "--json",
                  "--no-plot"])
    assert s1["recipe"] == "hat"
    s2 = cli.run([f"--configs={cfg}", "--eval-only", "--json", "--no-plot"])
    assert s2["test_rmse_ms"] == pytest.approx(s1["test_rmse_ms"], rel=1e-6)
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["mode"] == "eval-only"
    with pytest.raises(PredictorError, match="disagrees"):
        cli.run([f"--configs={cfg}", "--eval-only", "--lat-norm", "300", "--no-plot"])
    s3 = cli.run([f"--configs={cfg}", "--fewshot", "20", "--fewshot-method", "affine",
                  "--source-ckpt", str(tmp_path / "pred" / "p.pt"),
                  "--ckpt-path", str(tmp_path / "few.pt"), "--no-plot"])
    assert s3["mode"] == "fewshot" and s3["n_train"] == 20 and s3["method"] == "affine"
    assert (tmp_path / "few.pt.json").is_file()
    s4 = cli.run([f"--configs={cfg}", "--fewshot", "20", "--fewshot-method", "components",
                  "--source-dataset", str(_tiny_csv(tmp_path)), "--max-steps", "30",
                  "--ckpt-path", str(tmp_path / "few2.pt"), "--no-plot"])
    assert s4["method"] == "components" and (tmp_path / "few2.pt.members.pt").is_file()
    s5 = cli.run([f"--configs={cfg}", "--fewshot", "20", "--fewshot-method", "cost+src",
                  "--source-ckpt", str(tmp_path / "pred" / "p.pt"),
                  "--ckpt-path", str(tmp_path / "few3.pt"), "--no-plot"])
    s6 = cli.run([f"--configs={cfg}", "--eval-only", "--ckpt-path", str(tmp_path / "few3.pt"),
                  "--no-plot"])
    assert s5["method"] == "cost+src" and s6["test_rmse_ms"] == pytest.approx(
        s5["test_rmse_ms"], rel=1e-6)
    with pytest.raises(HatConfigError, match="needs the other device's dataset"):
        cli.run([f"--configs={cfg}", "--fewshot", "20", "--fewshot-method", "components",
                 "--source-ckpt", str(tmp_path / "pred" / "p.pt"), "--no-plot"])
    with pytest.raises(HatConfigError, match="--source-dataset"):
        cli.run([f"--configs={cfg}", "--fewshot", "20", "--no-plot"])


@needs_ref
def test_cli_eval_only_hat_shipped(tmp_path: Path) -> None:
    cli = _cli()
    name = "wmt14ende_cpu_xeon"
    s = cli.run([
        "--lat-dataset-path", str(REF / "latency" / f"{name}_all.csv"),
        "--ckpt-path", str(REF / "predictors" / f"{name}.pt"), "--lat-norm", "300",
        "--eval-only", "--plot-path", str(tmp_path / "s.png"),
    ])
    assert s["n_test"] == 200 and s["test_within10_pct"] > 50
    assert (tmp_path / "s.png").stat().st_size < 200_000


def test_cli_unknown_yaml_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli()
    cfg = _config(tmp_path, _tiny_csv(tmp_path), extra="hidden-dims: 3\n")
    with pytest.raises(HatConfigError, match=r"cfg\.yml: unknown key 'hidden-dims' "
                                             r"\(did you mean hidden-dim\?\)"):
        cli.run([f"--configs={cfg}"])
    assert cli.main([f"--configs={cfg}", "--hidden-dim", "3"]) == 2  # the YAML is still wrong
    assert f"error: {cfg}: unknown key 'hidden-dims'" in capsys.readouterr().err
    for key in ("configs: other.yml", "help: true", "data: x"):
        cfg = _config(tmp_path, _tiny_csv(tmp_path), extra=key + "\n")
        with pytest.raises(HatConfigError, match=rf"cfg\.yml: unknown key '{key[:4]}"):
            cli.run([f"--configs={cfg}"])
    cfg = _config(tmp_path, _tiny_csv(tmp_path), extra="zzz: 1\n")
    with pytest.raises(HatConfigError, match=r"cfg\.yml: unknown key 'zzz' \(known keys: bsz, "
                                             r"ckpt-path, drift-correct"):
        cli.run([f"--configs={cfg}"])
    cfg = _config(tmp_path, _tiny_csv(tmp_path))
    with pytest.raises(HatConfigError, match="feature-dim must be 10"):
        cli.run([f"--configs={cfg}", "--no-plot", "--feature-dim", "11"])


def test_cli_yaml_overrides_defaults_and_command_line_overrides_yaml(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hat.config_files import parse_with_configs
    from hat.latency.predict.cli import build_parser

    cfg = _config(tmp_path, tmp_path / "x.csv", extra="drift_window: 7\njson: true\n")
    args = parse_with_configs(build_parser(), [f"--configs={cfg}"])
    assert args.configs == str(cfg) and args.lat_norm == 200 and args.lr == 1e-5
    assert args.drift_window == 7 and args.json  # YAML over the defaults (15, off)
    assert args.members is None and args.plot_path is None  # defaults
    args = parse_with_configs(build_parser(), [
        f"--configs={cfg}", "--drift-window", "3", "--lat-norm=50", "--no-json",
        "--feature-norm", *["2"] * 10])
    assert args.drift_window == 3 and args.lat_norm == 50 and not args.json
    assert args.feature_norm == [2.0] * 10 and args.seed == 1
    args = parse_with_configs(build_parser(), ["--lat-dataset-path", "a.csv", "--ckpt-path",
                                               "p.pt", "--lat-norm", "8"])  # no YAML
    assert args.configs is None and args.drift_window == 15 and args.hidden_dim == 400
    cfg.write_text(cfg.read_text().replace("seed: 1", "seed: one"))
    with pytest.raises(HatConfigError, match=r"cfg\.yml: key 'seed': .*invalid int value"):
        parse_with_configs(build_parser(), [f"--configs={cfg}"])
    assert parse_with_configs(build_parser(), [f"--configs={cfg}", "--seed", "4"]).seed == 4
    with pytest.raises(HatConfigError, match="command line: unknown option or value '--sed' "
                                             r"\(did you mean seed\?\)"):
        parse_with_configs(build_parser(), [f"--configs={cfg}", "--seed", "4", "--sed", "3"])
    with pytest.raises(HatConfigError, match="command line: write --configs in full"):
        parse_with_configs(build_parser(), [f"--config={cfg}"])
    cfg.write_text(cfg.read_text() + "seed: 2\n")
    with pytest.raises(HatConfigError, match=r"cfg\.yml: key 'seed' is given twice, on line "):
        parse_with_configs(build_parser(), [f"--configs={cfg}"])


def test_cli_ensemble_members(tmp_path: Path) -> None:
    cli = _cli()
    cfg = _config(tmp_path, _tiny_csv(tmp_path))
    s = cli.run([f"--configs={cfg}", "--members", "2", "--max-steps", "40", "--no-plot"])
    assert s["members"] == 2
    back = LatencyPredictor.load(tmp_path / "pred" / "p.pt")
    assert len(back.members) == 2
    assert not np.allclose(back.members[0]["predict.weight"], back.members[1]["predict.weight"])
    with pytest.raises(HatConfigError, match="members must be >= 1"):
        cli.run([f"--configs={cfg}", "--members", "0", "--no-plot"])


@pytest.mark.slow
def test_cli_drift_correct_neighbours(tmp_path: Path) -> None:
    cli = _cli()
    cfg = _config(tmp_path, _tiny_csv(tmp_path))
    s = cli.run([f"--configs={cfg}", "--drift-correct", "neighbours", "--max-steps", "60",
                 "--no-plot", "--json"])
    assert s["drift_correct"] == "neighbours" and "test_within10_pct_uncorrected" in s
    assert 0.5 < s["drift"]["factor_min"] <= s["drift"]["factor_max"] < 2.0
    with pytest.raises(HatConfigError, match="needs at least"):
        cli.run([f"--configs={cfg}", "--drift-correct", "neighbours", "--drift-window", "200",
                 "--max-steps", "10", "--no-plot"])


def test_linear_start_equals_least_squares_fit() -> None:
    from hat.latency.predict.fit import _init_as_linear_fit
    from hat.latency.predict.predictor import LatencyMLP

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(300, 10)), dtype=torch.float32)
    y = (x @ torch.arange(1.0, 11.0)[:, None] + 3.0 + 0.1 * torch.randn(300, 1)).float()
    net = LatencyMLP(10, 40, 3)
    _init_as_linear_fit(net, x, y)
    a = np.c_[x.double().numpy(), np.ones(300)]
    coef, *_ = np.linalg.lstsq(a, y.double().numpy(), rcond=None)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).double().numpy(), a @ coef, rtol=1e-4, atol=1e-3)


def test_a_second_predictor_training_into_one_ckpt_path_is_refused(tmp_path: Path) -> None:
    import os

    from hat.runstate import exclusive

    cfg = _config(tmp_path, _tiny_csv(tmp_path))
    ckpt = tmp_path / "pred" / "p.pt"
    with exclusive(ckpt, "training a predictor into this ckpt-path"):  # a first one, running
        with pytest.raises(HatConfigError, match=rf"p.pt: another process \(pid {os.getpid()}\) "
                                                 "is training a predictor into this ckpt-path"):
            _cli().run([f"--configs={cfg}", "--no-plot", "--max-steps", "5"])
    assert not ckpt.exists()
