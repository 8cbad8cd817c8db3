"""Cost terms, predictors that carry them, combined predictors and the cost-term few-shot fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hat.latency.predict.costterms import COST_TERMS, cost_terms, fit_relative_ridge
from hat.latency.predict.fewshot import fit_fewshot
from hat.latency.predict.fit import fit_recipe, split_indices, train_predictor
from hat.latency.predict.predictor import (
    COST_KEY,
    FEATURE_NORM,
    LatencyMLP,
    LatencyPredictor,
    PredictorError,
    combine_predictors,
)
from hat.latency.predict.report import metrics
from hat.space import SearchSpace, SubConfig
from tests.conftest import synthetic_features


def _sd(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return LatencyMLP().state_dict()


def test_cost_terms_of_a_subtransformer_by_hand() -> None:
    cfg = SubConfig(
        encoder_embed_dim=640, encoder_layer_num=6,
        encoder_ffn_embed_dim=(3072, 2048, 1024, 512, 3072, 2048),
        encoder_self_attention_heads=(8, 4, 2, 8, 4, 2),
        decoder_embed_dim=512, decoder_layer_num=3, decoder_ffn_embed_dim=(1024, 2048, 3072),
        decoder_self_attention_heads=(4, 8, 2), decoder_ende_attention_heads=(2, 2, 8),
        decoder_arbitrary_ende_attn=(-1, 1, 2),
    )
    got = dict(zip(COST_TERMS, cost_terms(np.array(SearchSpace.features(cfg)))[0]))
    want = {
        "constant": 1, "enc_layers": 6, "enc_layers*enc_dim": 6 * 640,
        "enc_dim*enc_ffn_sum": 640 * (3072 + 2048 + 1024 + 512 + 3072 + 2048),
        "enc_heads_sum": 28, "dec_dim": 512, "dec_layers": 3, "dec_layers*dec_dim": 3 * 512,
        "dec_dim*dec_ffn_sum": 512 * (1024 + 2048 + 3072), "dec_self_heads_sum": 14,
        "dec_ende_heads_sum": 12, "dec_ende_inputs_sum": 1 + 2 + 3,
        "dec_ende_inputs_sum*enc_dim": (1 + 2 + 3) * 640,
    }
    assert got == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match=r"shape \[N, 10\]"):
        cost_terms(np.zeros((2, 9)))


def test_relative_ridge_recovers_exact_coefficients() -> None:
    x = synthetic_features(200, np.random.default_rng(0))
    a = cost_terms(x)
    true = np.abs(np.random.default_rng(1).normal(size=a.shape[1])) / a.mean(axis=0)
    c = fit_relative_ridge(a, a @ true, lam=0.0)
    np.testing.assert_allclose(a @ c, a @ true, rtol=1e-8)


def test_combine_predictors_is_the_weighted_sum(tmp_path: Path) -> None:
    x = synthetic_features(40, np.random.default_rng(2))
    p1 = LatencyPredictor([_sd(0), _sd(1)], FEATURE_NORM, 300)
    p2 = LatencyPredictor([_sd(2)], FEATURE_NORM, 200, cost_coef=np.linspace(1e-3, 1e-2, 13))
    p3 = LatencyPredictor([], FEATURE_NORM, 50, cost_coef=np.full(13, 1e-4))
    both = combine_predictors([(0.3, p1), (2.0, p2), (-0.5, p3)], bias_ms=7.0)
    want = 0.3 * p1.predict(x) + 2.0 * p2.predict(x) - 0.5 * p3.predict(x) + 7.0
    np.testing.assert_allclose(both.predict(x), want, rtol=1e-5, atol=1e-6)
    only_mlp = combine_predictors([(1.5, p1)], bias_ms=-2.0)  # bias into the MLPs
    np.testing.assert_allclose(only_mlp.predict(x), 1.5 * p1.predict(x) - 2.0, rtol=1e-5)
    with pytest.raises(ValueError, match="same feature_norm"):
        fn = list(FEATURE_NORM)
        fn[0] = 1
        combine_predictors([(1, p1), (1, LatencyPredictor([_sd(3)], fn, 300))])


def test_cost_predictor_save_load_and_hat_refuses_it(tmp_path: Path) -> None:
    x = synthetic_features(30, np.random.default_rng(3))
    coef = np.linspace(1e-4, 1e-3, 13)
    for members in ([], [_sd(0)], [_sd(0), _sd(1)]):
        p = LatencyPredictor(members, FEATURE_NORM, 300, {"m": len(members)}, cost_coef=coef)
        path = p.save(tmp_path / f"p{len(members)}.pt")
        back = LatencyPredictor.load(path)
        np.testing.assert_allclose(back.predict(x), p.predict(x), rtol=1e-6)
        assert len(back.members) == len(members) and back.meta == {"m": len(members)}
        np.testing.assert_array_equal(back.cost_coef, coef)
        if members:  # HAT's strict load_state_dict must not silently drop the cost terms
            with pytest.raises(RuntimeError, match=COST_KEY.replace(".", r"\.")):
                LatencyMLP().load_state_dict(torch.load(path, weights_only=True))
    no_mlp = LatencyPredictor([], FEATURE_NORM, 300, cost_coef=coef)
    np.testing.assert_allclose(no_mlp.predict(x), cost_terms(x) @ coef, rtol=1e-12)
    with pytest.raises(PredictorError, match="no member network 0"):
        no_mlp.state_dict(0)


def test_cost_predictor_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(PredictorError, match="at least one member network or cost terms"):
        LatencyPredictor([], FEATURE_NORM, 300)
    with pytest.raises(PredictorError, match="13 finite numbers"):
        LatencyPredictor([], FEATURE_NORM, 300, cost_coef=np.ones(12))
    bad = tmp_path / "bad.pt"
    torch.save({COST_KEY: torch.ones(5)}, bad)
    with pytest.raises(PredictorError, match=r"bad\.pt: cost coefficients must be 13"):
        LatencyPredictor.load(bad, lat_norm=300)
    good = LatencyPredictor([], FEATURE_NORM, 300, cost_coef=np.ones(13)).save(tmp_path / "g.pt")
    side = Path(str(good) + ".json")
    side.write_text(side.read_text().replace('"dec_dim"', '"decoder_dim"'))
    with pytest.raises(PredictorError, match="written with cost terms"):
        LatencyPredictor.load(good)


def test_fewshot_cost_terms_fit_a_device_with_another_balance(tmp_path: Path) -> None:
    """New hardware whose latency is linear in the cost terms with a balance unlike the source
    device's (matmuls 5x dearer, per-layer overhead 5x cheaper): rescaling the source predictor
    cannot express it; the cost-term candidates can, and CV finds them."""
    rng = np.random.default_rng(5)
    x = synthetic_features(800, rng)
    a = cost_terms(x)
    src_coef = np.array([5, .5, 1e-3, 2e-7, .05, 1e-3, 1.0, 2e-3, 2e-7, .05, .05, .2, 1e-4])
    new_coef = src_coef * np.array([1, .2, 5, 5, .2, 5, .2, 5, 5, .2, .2, .2, 5])
    y_src, y_new = a @ src_coef, (a @ new_coef) * rng.normal(1, 0.01, len(x))
    tr, va, te = split_indices(len(x), 0)
    src = train_predictor(x, y_src, tr, va, fit_recipe("default", steps=200), lat_norm=50, seed=0)
    shots = tr[:50]
    few = fit_fewshot(src, x[shots], y_new[shots], seed=0,
                      methods=("affine", "cost", "cost+src"))
    assert few.meta["method"] in ("cost", "cost+src"), few.meta["cv_mse_rel"]
    m = metrics(few.predict(x[te]), y_new[te])
    affine = metrics(fit_fewshot(src, x[shots], y_new[shots], method="affine").predict(x[te]),
                     y_new[te])
    assert m["within10_pct"] > 98 and m["mape_pct"] < 0.5 * affine["mape_pct"], (m, affine)
    for method in ("cost+src", "finetune+cost"):  # mixtures save and load like any predictor
        p = fit_fewshot(src, x[shots], y_new[shots], seed=0, method=method)
        assert p.members and p.cost_coef is not None and p.meta["method"] == method
        back = LatencyPredictor.load(p.save(tmp_path / "p.pt"))
        np.testing.assert_allclose(back.predict(x[te]), p.predict(x[te]), rtol=1e-5)
    cost_only = fit_fewshot(src, x[shots], y_new[shots], method="cost")
    assert not cost_only.members and metrics(cost_only.predict(x[te]), y_new[te])[
        "within10_pct"] > 98
    # a cost-only source has nothing to fine-tune: the default candidates leave finetune out
    chained = fit_fewshot(cost_only, x[shots], y_new[shots], seed=0)
    assert not chained.meta["method"].startswith("finetune")
    assert not any(k.startswith("finetune") for k in chained.meta["cv_mse_rel"])


def test_cost_base_recipe_fits_interactions_and_round_trips(tmp_path: Path) -> None:
    """Latency with strong products of features (matmul work = layers x dims x FFN widths):
    the cost-term base carries them exactly, the MLP only the small remainder."""
    rng = np.random.default_rng(7)
    x = synthetic_features(900, rng)
    coef = np.array([20, 1, 1e-3, 2e-6, .2, .01, 2, 4e-3, 3e-6, .1, .1, .5, 2e-4])
    y = (cost_terms(x) @ coef) * (1 + 0.02 * np.sin(x[:, 3])) * rng.normal(1, 0.005, len(x))
    tr, va, te = split_indices(len(x), 0)
    r = fit_recipe("default", steps=150, cost_base=True)
    hyb = train_predictor(x, y, tr, va, r, lat_norm=100, seed=0)
    assert hyb.cost_coef is not None and len(hyb.members) == 1
    plain = train_predictor(x, y, tr, va, fit_recipe("default", steps=150, cost_base=False),
                            lat_norm=100, seed=0)
    m_h, m_p = (metrics(p.predict(x[te]), y[te]) for p in (hyb, plain))
    assert m_h["mape_pct"] < 1.0 and m_h["rmse_ms"] < 0.9 * m_p["rmse_ms"], (m_h, m_p)
    back = LatencyPredictor.load(hyb.save(tmp_path / "h.pt"))
    np.testing.assert_allclose(back.predict(x[te]), hyb.predict(x[te]), rtol=1e-6)
    assert back.meta["recipe"]["cost_base"] is True
