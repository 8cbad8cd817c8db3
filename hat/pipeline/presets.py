"""Sizes of the one-command pipeline: ``default`` (a 2-core CPU in about 10 minutes), ``tiny``
(the test, well under 3 minutes), ``cuda`` (one GPU, a larger toy corpus and longer training) and
``debian`` (the real Debian corpora on a GPU; about 26 minutes on one H200)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

# the pipeline's stages, in the order they run (each preset's plan_s times them in this order)
STAGES = ("corpus", "supertransformer", "latency_dataset", "latency_predictor", "baseline",
          "search", "retrain", "bleu", "latency", "report")
# the order of a one-GPU run whose baselines retrain beside the SuperTransformer: the latency
# stages measure first, on an idle GPU, and pick the baselines the SuperTransformer's training
# then shares the GPU with
EARLY_BASELINES = ("corpus", "latency_dataset", "latency_predictor", "baseline",
                   "supertransformer", "search", "retrain", "bleu", "latency", "report")


@dataclass(frozen=True)
class Preset:
    """Every size the pipeline uses (all stages run for real; only their length changes)."""

    name: str
    n_train: int = 6000  # synthetic corpus: training pairs
    n_valid: int = 300
    n_test: int = 300
    super_updates: int = 800  # SuperTransformer training updates
    lat_rows: int = 120  # latency dataset rows (SubTransformers measured)
    latiter: int = 10  # timed runs per row
    predictor_steps: int = 2000  # train-steps: HAT's recipe only; the default recipe trains its own
    evo_iter: int = 8
    population: int = 30
    parents: int = 8
    mutation: int = 11
    crossover: int = 11
    retrain_updates: int = 400  # per found SubTransformer and the baseline, from scratch
    # stop each retraining once converged (train.py --stop-converged-bits); retrain_updates is
    # then the cap
    retrain_converged_bits: float | None = None
    limit_quantiles: tuple[float, ...] = (0.15, 0.4)  # of the measured latencies
    baselines: int = 1  # uniform Transformers retrained (fastest ... slowest of the space)
    # with several baselines, one more limit at this fraction of each one's latency (the lower of
    # measured and predicted)
    # (HAT's claim: a found model as good at <= 0.7x the latency)
    baseline_limit_ratio: float = 0.7
    # one limit at the fastest baseline's own latency (False: at the ratio, as for the
    # others, so that every limit is one of HAT's claims)
    limit_at_fastest_baseline: bool = True
    # this many more limits, evenly spaced between the fastest SubTransformer measured and the
    # lowest limit above: winners of >= 5 limits for HAT's fidelity check (spearman_winners)
    limits_below: int = 0
    device: str = "cpu"
    # training batches and schedule (None: the task's config as committed)
    max_tokens: int | None = None  # None: the config's on the CPU, 8192 on a GPU
    fp16: bool = False
    warmup_updates: int | None = None  # SuperTransformer and retraining
    super_stop_minutes: float | None = None  # SuperTransformer training also stops after this
    # on one GPU: retrain the baselines beside the SuperTransformer (they need none of it), so
    # the retrain stage trains only the found models (order EARLY_BASELINES)
    baselines_beside_super: bool = False
    jobs: int = 2  # models retrained / scored at once (--jobs; not part of a run's settings)
    # planned seconds per stage on a 2-core CPU (progress ETA only; scaled by what is observed)
    plan_s: tuple[tuple[str, float], ...] = (
        ("corpus", 15), ("supertransformer", 150), ("latency_dataset", 45),
        ("latency_predictor", 25), ("baseline", 5), ("search", 45), ("retrain", 170),
        ("bleu", 45), ("latency", 20), ("report", 5))

    def __post_init__(self) -> None:
        if tuple(k for k, _ in self.plan_s) != STAGES:  # the stage order lives in STAGES
            raise ValueError(f"preset {self.name}: plan_s must time {', '.join(STAGES)} in order")

    def order(self, gpus: int) -> tuple[str, ...]:
        """The order this preset's stages run in on ``gpus`` GPUs."""
        return EARLY_BASELINES if self.baselines_beside_super and gpus == 1 else STAGES

    def settings(self, synthetic_corpus: bool = True) -> dict[str, Any]:
        """What a resumed run must share with the first one (the synthetic corpus's sizes only
        when the run makes that corpus)."""
        d = asdict(self)
        d.pop("plan_s")
        d.pop("jobs")  # how many at once changes the wall time, not the results
        if not synthetic_corpus:
            for key in ("n_train", "n_valid", "n_test"):
                d.pop(key)
        d["limit_quantiles"] = list(self.limit_quantiles)
        return d


PRESETS: dict[str, Preset] = {
    "default": Preset("default"),
    "tiny": Preset(
        "tiny", n_train=1500, n_valid=60, n_test=60, super_updates=60, lat_rows=40, latiter=3,
        predictor_steps=300, evo_iter=3, population=12, parents=4, mutation=4, crossover=4,
        retrain_updates=30, baselines=2,
        plan_s=(("corpus", 8), ("supertransformer", 20), ("latency_dataset", 15),
                ("latency_predictor", 10), ("baseline", 3), ("search", 15), ("retrain", 25),
                ("bleu", 20), ("latency", 8), ("report", 3))),
    "cuda": Preset(
        "cuda", n_train=30000, n_valid=600, n_test=600, super_updates=3000, lat_rows=200,
        latiter=20, predictor_steps=3000, evo_iter=15, population=50, parents=12, mutation=20,
        crossover=18, retrain_updates=1500, device="cuda",
        plan_s=(("corpus", 30), ("supertransformer", 150), ("latency_dataset", 60),
                ("latency_predictor", 20), ("baseline", 5), ("search", 40), ("retrain", 150),
                ("bleu", 30), ("latency", 10), ("report", 5))),
    "debian": Preset(
        # real corpus (~200k pairs, ~1.6M target tokens a side): the configs' recipe (16k-token
        # batches, warmup 1000, fp16) and SuperTransformer sampling (largest + smallest + 1
        # random per update), capped at 11.5 minutes: sharing the GPU with the baselines for
        # its first ~10 it reaches ~4,200 of its 6,500 updates (one H200, 2026-12-03: 4,438 in
        # 12 minutes, its largest / smallest SubTransformer then 0.01 / 0.17 bits above the
        # same ones trained alone to convergence; 0.05 / 0.22 at 4,261 updates, 0.13 / 0.28
        # at 3,873); every retraining runs until converged (< 0.05 bits
        # over its last 20 % of updates), at most 8000 updates. One limit at 0.7x each
        # baseline's latency, the lower of measured and predicted (HAT's claim), no quantile
        # limits: each found model retrains for ~2.5 GPU-minutes, and 5 of them did not fit in
        # 25 minutes
        # (--limits-below 2: 5 limits, the winners of HAT's fidelity check; not yet timed)
        "debian", super_updates=6500, lat_rows=300, latiter=20, predictor_steps=3000,
        evo_iter=15, population=50, parents=12, mutation=20, crossover=18, retrain_updates=8000,
        retrain_converged_bits=0.05, limit_quantiles=(), limit_at_fastest_baseline=False,
        device="cuda", max_tokens=16384, fp16=True, warmup_updates=1000, baselines=3,
        super_stop_minutes=11.5, baselines_beside_super=True,
        # retrainings at once through CUDA MPS, one H200: 3 at 11.7-13.3 updates/s each, 5 at
        # 9.2-11.7 (the pipeline's found models, 2026-12-03); one alone ~17 (train profile)
        jobs=5,
        # seconds, measured on one H200 (2026-12-04, bench/results/pipeline_debian_en-de_
        # h200.json, 25.9 min in all): the latency stages 55 + 43, the SuperTransformer 714
        # (4,128 updates; the baselines converged and were scored beside it), the search 80,
        # the 3 found models' retraining and BLEU 612 (4,844-5,233 updates each, 3 at once)
        plan_s=(("corpus", 5), ("supertransformer", 715), ("latency_dataset", 55),
                ("latency_predictor", 43), ("baseline", 5), ("search", 80), ("retrain", 612),
                ("bleu", 5), ("latency", 5), ("report", 5))),
}


def preset(name: str, device: str | None = None) -> Preset:
    """A preset by name (``--device`` overrides its device)."""
    p = PRESETS[name]
    return replace(p, device=device) if device else p
