"""The static-cache beam search gives fairseq SequenceGenerator's hypotheses and scores."""

from __future__ import annotations

import random

import pytest
import torch
from fairseq.sequence_generator import SequenceGenerator

from hat.generate import BeamSettings, StaticBeamSearch
from hat.space import SearchSpace
from tests.conftest import TINY_SPACE, tiny_supernet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _batch(vocab: int, bsz: int, seed: int, pad: int = 1, eos: int = 2
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded source sentences of different lengths (fairseq's default layout)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 9, (bsz,), generator=g)
    src = torch.full((bsz, int(lengths.max())), pad, dtype=torch.long)
    for i, n in enumerate(lengths.tolist()):
        src[i, -n:] = torch.randint(4, vocab, (n,), generator=g)
        src[i, -1] = eos
    return src, lengths


def _model(seed: int, eos_boost: float):
    model = tiny_supernet(seed=seed)
    model.set_sample_config(SearchSpace(**TINY_SPACE).sample(random.Random(seed)))
    return _boost_eos(model, eos_boost)


def _boost_eos(model, eos_boost: float):
    project = model.decoder.output_layer

    def output_layer(features: torch.Tensor) -> torch.Tensor:
        """Random weights rarely pick EOS: raise its logit by an amount that depends on the
        decoder state, so hypotheses end at different steps."""
        logits = project(features)
        logits[..., 2] += eos_boost * (1 + features[..., 0])
        return logits

    model.decoder.output_layer = output_layer
    return model


def _fairseq(model, dictionary, src, lengths, s: BeamSettings):
    gen = SequenceGenerator([model], dictionary, beam_size=s.beam, len_penalty=s.lenpen,
                            min_len=s.min_len, max_len_a=s.max_len_a, max_len_b=s.max_len_b,
                            unk_penalty=s.unk_penalty)
    return gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": lengths}})


def _same(ours, theirs) -> None:
    assert len(ours) == len(theirs)
    for a_sent, b_sent in zip(ours, theirs):
        assert len(a_sent) == len(b_sent)
        for a, b in zip(a_sent, b_sent):
            assert torch.equal(a["tokens"], b["tokens"])
            torch.testing.assert_close(a["score"], b["score"], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(a["positional_scores"], b["positional_scores"],
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed,eos_boost,settings", [
    (4, 1.5, BeamSettings(beam=5, max_len_b=20)),
    (1, 0.5, BeamSettings(beam=4, lenpen=0.6, max_len_b=15)),
    (2, 1.0, BeamSettings(beam=3, min_len=4, max_len_a=1.2, max_len_b=3)),
    (3, 0.0, BeamSettings(beam=5, max_len_b=6, unk_penalty=0.5)),  # never EOS: max length
    (4, 0.5, BeamSettings(beam=2, lenpen=1.3, max_len_b=20)),
])
def test_same_hypotheses_as_fairseq(seed: int, eos_boost: float, settings: BeamSettings) -> None:
    model = _model(seed, eos_boost)
    dictionary = model.decoder.dictionary
    src, lengths = _batch(len(dictionary), 6, seed)
    theirs = _fairseq(model, dictionary, src, lengths, settings)
    ours = StaticBeamSearch(model, dictionary, settings).generate(src, lengths)
    _same(ours, theirs)
    ended = {len(h["tokens"]) for sent in theirs for h in sent}
    assert len(ended) > 1 or settings.max_len_b == 6  # the cases exercise early EOS


def test_exported_subtransformer_decodes_like_its_supertransformer() -> None:
    from hat.export import build_compact

    model = _model(4, 1.5)
    dictionary = model.decoder.dictionary
    sub = _boost_eos(build_compact(model, model.sample_config).eval(), 1.5)
    src, lengths = _batch(len(dictionary), 4, 4)
    s = BeamSettings(beam=4, max_len_b=10)
    _same(StaticBeamSearch(sub, dictionary, s).generate(src, lengths),
          _fairseq(model, dictionary, src, lengths, s))


def test_graph_path_twin_runs_every_step_with_the_same_hypotheses() -> None:
    """What a CUDA graph replays: every step (no early stop), with the length limit and the
    padding mask (on or off) fixed before the capture; on a CPU GraphBeamSearch runs eagerly."""
    from hat.generate import GraphBeamSearch

    model = _model(4, 1.5)
    dictionary = model.decoder.dictionary
    src, lengths = _batch(len(dictionary), 6, 7)
    assert bool(src.eq(dictionary.pad()).any())  # left padding: the mask matters
    s = BeamSettings(beam=4, max_len_b=20)
    search = StaticBeamSearch(model, dictionary, s)
    expected = _fairseq(model, dictionary, src, lengths, s)
    with torch.inference_mode():
        st, enc = search.start(src, lengths, max_len=search.max_len(lengths), has_padding=True)
        search.run_all(st, enc)
    assert bool(st.finished.all())
    _same(search.results(st), expected)
    graph = GraphBeamSearch(model, dictionary, s)
    _same(graph.generate(src, lengths), expected)
    assert graph.graph_key(src, lengths) == (6, src.size(1), 20, True)
    longest = lengths == lengths.max()
    no_pad, no_pad_lengths = src[longest], lengths[longest]
    expected = _fairseq(model, dictionary, no_pad, no_pad_lengths, s)
    for mask in (True, False):  # a batch without padding, with and without a mask
        with torch.inference_mode():
            st, enc = search.start(no_pad, no_pad_lengths, max_len=20, has_padding=mask)
            search.run_all(st, enc)
            packed = search.pack(st)  # a graph records this at the end of its search
        _same(search.results(st, packed), expected)
    assert graph.graph_key(no_pad, no_pad_lengths)[3] is False


def test_a_generators_decoder_share_is_never_negative(monkeypatch) -> None:
    """Whole call minus encoder: re-timed while the difference is not positive (a busy
    machine), then a clear error instead of a negative latency."""
    from hat.errors import HatConfigError
    from hat.latency.measure import timing
    from hat.latency.measure.timing import LatencyMeter, Protocol

    model = tiny_supernet(seed=1)
    cfg = SearchSpace(**TINY_SPACE).sample(random.Random(2))
    meter = LatencyMeter(model, Protocol(src_len=6, beam=3, warmup=0, iters=3,
                                         deployment="generate"))
    real = meter._time
    times = iter([[9.0] * 3, [5.0] * 3, [2.0] * 3, [7.0] * 3])  # enc, call, enc, call

    def fake(fn, capture=True):
        return next(times), real(fn, capture)[1]

    monkeypatch.setattr(meter, "_time", fake)
    m = meter.measure(cfg)  # first try: 5 - 9 < 0; second: 7 - 2
    assert (m.enc_mean, m.dec_mean) == (2.0, 5.0)
    monkeypatch.setattr(meter, "_time", lambda fn, capture=True: ([9.0] * 3
                        if fn == meter.encode else [5.0] * 3, real(fn, capture)[1]))
    with pytest.raises(HatConfigError, match=f"negative {timing.GENERATOR_TRIES} times"):
        meter.measure(cfg)


@pytest.mark.parametrize("deployment", ["generate", "fairseq-generate"])
def test_latency_meter_times_the_deployed_generator(deployment: str) -> None:
    """The meter's generator protocols decode exactly src_len steps, on the CPU eagerly."""
    from hat.latency.measure.timing import LatencyMeter, Protocol

    model = tiny_supernet(seed=1)
    cfg = SearchSpace(**TINY_SPACE).sample(random.Random(2))
    meter = LatencyMeter(model, Protocol(src_len=6, beam=3, warmup=1, iters=3,
                                         deployment=deployment))
    m = meter.measure(cfg)
    assert m.enc_mean > 0 and m.dec_mean > 0
    model.set_sample_config(cfg)
    with torch.inference_mode():
        enc = model.encoder.reorder_encoder_out(meter.encode(), meter.beam_order)
        out = meter.deployed_decode(enc)()
    assert [len(h["tokens"]) for h in out[0]] == [6, 6, 6]  # 5 tokens and EOS


def test_protocol_refuses_impossible_deployments() -> None:
    from hat.errors import HatConfigError
    from hat.latency.measure.timing import Protocol

    with pytest.raises(HatConfigError, match="lat-deployment 'beam'"):
        Protocol(deployment="beam")
    with pytest.raises(HatConfigError, match="cannot be a CUDA graph"):
        Protocol(device="cuda", cuda_graph=True, deployment="fairseq-generate")
    with pytest.raises(HatConfigError, match="eval mode"):
        Protocol(train_mode=True, deployment="generate")


@pytest.mark.slow
def test_generate_speed_bench_runs_on_the_cpu(tmp_path) -> None:
    """bench.speed.generate_speed's CPU smoke run: every row measured, the searches agree."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "g.json"
    proc = subprocess.run([sys.executable, "-m", "bench.speed.generate_speed", "--quick",
                           "--device",
                           "cpu", "--iters", "2", "--warmup", "1", "--batches", "1,3",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 3]
    assert all(r["eager_equals_fairseq"] for r in rows)
    assert all(r[k] > 0 for r in rows for k in ("fairseq_stock", "fairseq_exported",
                                                "static_eager"))
    assert rows[0]["meter_hat"] > 0 and rows[0]["meter_generate"] > 0


@pytest.mark.slow
def test_deployed_latency_bench_runs_on_the_cpu(tmp_path) -> None:
    """bench.studies.deployed_latency's CPU smoke run on the toy space: every SubTransformer
    timed both
    ways, the summary and the plot written."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "d.json"
    proc = subprocess.run([sys.executable, "-m", "bench.studies.deployed_latency",
                           "--device", "cpu",
                           "--configs", "configs/toy/latency_dataset/cpu_epyc.yml",
                           "--samples", "3", "--iters", "2", "--warmup", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert len(res["rows"]) == 3 and res["protocol"]["deployment"] == "generate"
    assert all(r["meter_generate"] > 0 and r["deployed"] > 0 for r in res["rows"])
    assert res["summary"]["min_ratio"] <= res["summary"]["median_ratio"]
    assert (tmp_path / "d.png").stat().st_size > 0


def test_search_measures_winners_with_the_predictors_deployment() -> None:
    """evo_search's --measure-latency takes the deployment path from the predictor's dataset
    (and HAT's protocol when the predictor records none)."""
    from types import SimpleNamespace

    from hat.search.latency import measure_setup
    from tests.conftest import tiny_args

    proto = {"src_len": 6, "beam": 3, "warmup": 1, "iters": 2, "device": "cpu",
             "deployment": "generate"}
    setup = measure_setup(SimpleNamespace(meta={"dataset": {"protocol": proto}}), "cpu",
                          tiny_args())
    assert setup.protocol.deployment == "generate"
    assert "hat.generate's beam search" in setup.describe()
    hat = measure_setup(SimpleNamespace(meta={}), "cpu", tiny_args())
    assert hat.protocol.deployment == "hat" and "HAT's protocol" in hat.describe()


def test_predictor_says_which_decode_its_latencies_are_for() -> None:
    from hat.latency.predict.predictor import LatencyPredictor
    from tests.conftest import ROOT

    pred = LatencyPredictor.load(ROOT / "latency_dataset" / "predictors" / "toy_cpu_epyc.pt")
    assert pred.deployment == "hat"  # measured before lat-deployment existed: HAT's protocol
    pred.meta["dataset"] = {"protocol": {"deployment": "generate"}}
    assert pred.deployment == "generate"
