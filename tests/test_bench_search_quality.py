"""bench/studies/search_quality.py: the random-search baseline and the shared fitness memo."""

from __future__ import annotations

import numpy as np

from hat.search.evolution import Limits
from hat.space import SearchSpace
from tests.conftest import load_script, tiny_args


def test_random_search_draws_distinct_feasible_and_keeps_the_best() -> None:
    sq = load_script("bench/studies/search_quality.py")
    space = SearchSpace.from_args(tiny_args())

    def latency(cfgs):  # "ms" = decoder layers: limit 2 keeps 1- and 2-layer decoders
        return np.asarray([float(c.decoder_layer_num) for c in cfgs])

    calls = []

    def loss(cfg):
        calls.append(cfg.key())
        return 10.0 - cfg.decoder_embed_dim / 10 + sum(cfg.encoder_ffn_embed_dim) / 1000

    fit = sq.MemoFitness(loss)
    out = sq.random_search(space, latency, fit, Limits(2.0), budget=25, seed=3)
    assert len(out["keys"]) == 25 == len(set(out["keys"]))
    assert all(fit.cfgs[k].decoder_layer_num <= 2 for k in out["keys"])
    assert out["best_loss"] == min(out["losses"]) == fit.memo[out["key"]]
    again = sq.random_search(space, latency, fit, Limits(2.0), budget=25, seed=3)
    assert again["keys"] == out["keys"]  # seeded
    assert len(calls) == 25 and fit.hits == 25  # the memo answered the second run


def test_spread_and_stats() -> None:
    sq = load_script("bench/studies/search_quality.py")
    s = sq.spread([1.0, 2.0, 3.0, 4.0])
    assert s["n"] == 4 and s["min"] == 1.0 and s["max"] == 4.0 and s["median"] == 2.5
    t = sq.stats([2.0, 4.0])
    assert t == {"mean": 3.0, "min": 2.0, "max": 4.0, "std": np.std([2.0, 4.0], ddof=1)}
