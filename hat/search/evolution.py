"""HAT's evolutionary search over SubTransformer genes, under latency (and size) limits.

The algorithm is SPEC's: an initial population rejection-sampled against the limit; every
iteration the ``parent_size`` lowest-loss members are kept, ``mutation_size`` mutants (a random
parent, each gene resampled with ``mutation_prob``) and ``crossover_size`` crossovers (two distinct
parents, each gene from either with probability 0.5) are added, every child rejection-sampled
against the limit. What this module adds:

- one seeded ``random.Random`` drives every draw (same seed, same search);
- a score cache keyed by the canonical SubTransformer (dormant genes ignored): parents are not
  re-scored and duplicates are scored once (``cache=False`` re-scores every member of every
  generation, HAT's procedure; the result is the same);
- rejection sampling is bounded (:class:`InfeasibleError` instead of an endless loop);
- several limits in one run (Pareto mode): one population per limit, one shared cache, initial
  members shared where they satisfy a tighter limit, and every limit's parents chosen from its
  own population plus the other populations' members that also satisfy it;
- the whole state (populations, RNG, scores) is a JSON-able dict, saved after every iteration,
  so a killed search resumes and ends with the same result.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hat.errors import HatConfigError
from hat.space import SearchSpace, SubConfig

Genes = list[int]


class InfeasibleError(HatConfigError):
    """No (or too few) SubTransformers satisfy the limits."""


@dataclass(frozen=True)
class EvoSettings:
    """HAT's search settings (its key names with dashes), plus the seed and the sampling bound."""

    evo_iter: int = 30
    population_size: int = 125
    parent_size: int = 25
    mutation_size: int = 50
    crossover_size: int = 50
    mutation_prob: float = 0.3
    seed: int = 1
    max_tries: int = 2000  # rejection-sampling draws per child (per initial member: x 50)

    def check(self, source: str | None = None) -> None:
        """One clear error per bad value, naming the key."""
        pre = f"{source}: " if source else ""
        for name in ("evo_iter", "population_size", "parent_size", "max_tries"):
            if getattr(self, name) <= 0:
                raise HatConfigError(f"{pre}{_key(name)} must be > 0, got {getattr(self, name)}")
        for name in ("mutation_size", "crossover_size"):
            if getattr(self, name) < 0:
                raise HatConfigError(f"{pre}{_key(name)} must be >= 0, got {getattr(self, name)}")
        if self.parent_size > self.population_size:
            raise HatConfigError(f"{pre}parent-size {self.parent_size} is larger than "
                                 f"population-size {self.population_size}")
        if self.crossover_size and self.parent_size < 2:
            raise HatConfigError(f"{pre}crossover needs two distinct parents: parent-size must be "
                                 f">= 2 (or crossover-size 0), got {self.parent_size}")
        if not 0.0 <= self.mutation_prob <= 1.0:
            raise HatConfigError(f"{pre}mutation-prob must be within [0, 1], got "
                                 f"{self.mutation_prob}")


def _key(name: str) -> str:
    return name.replace("_", "-")


@dataclass
class Candidate:
    """One evaluated SubTransformer."""

    key: str
    genes: Genes
    loss: float
    latency_ms: float
    params_m: float
    iteration: int


@dataclass
class Limits:
    """Feasibility: predicted latency <= ``latency_ms`` and, if set, #params <= ``params_m``."""

    latency_ms: float
    params_m: float | None = None

    def ok(self, latency: float, params: float) -> bool:
        return latency <= self.latency_ms and (self.params_m is None or params <= self.params_m)

    def describe(self) -> str:
        t = f"latency <= {self.latency_ms:g} ms"
        return t + (f", #params <= {self.params_m:g}M" if self.params_m is not None else "")


@dataclass
class SearchState:
    """Everything a resumed search needs (JSON-able through :meth:`to_json`)."""

    iteration: int = 0  # iterations whose children are already generated
    populations: list[list[Genes]] = field(default_factory=list)
    rng: Any = None
    scores: dict[str, Candidate] = field(default_factory=dict)  # key -> candidate (the cache)
    evaluations: int = 0  # fitness calls
    cache_hits: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration, "populations": self.populations,
            "rng": [self.rng[0], list(self.rng[1]), self.rng[2]] if self.rng else None,
            "scores": {k: asdict(c) for k, c in self.scores.items()},
            "evaluations": self.evaluations, "cache_hits": self.cache_hits,
            "history": self.history, "done": self.done,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SearchState:
        rng = d.get("rng")
        return cls(
            iteration=int(d["iteration"]), populations=[[list(g) for g in p]
                                                        for p in d["populations"]],
            rng=(rng[0], tuple(rng[1]), rng[2]) if rng else None,
            scores={k: Candidate(**c) for k, c in d["scores"].items()},
            evaluations=int(d["evaluations"]), cache_hits=int(d["cache_hits"]),
            history=list(d["history"]), done=bool(d.get("done", False)),
        )


class Evolution:
    """The search. ``fitness(cfg)`` returns a validation loss; ``latency(cfgs)`` predicted ms
    for a batch; ``params(cfg)`` the #params in millions (HAT's convention)."""

    def __init__(self, space: SearchSpace, settings: EvoSettings, limits: Sequence[Limits],
                 fitness: Callable[[SubConfig], float],
                 latency: Callable[[Sequence[SubConfig]], np.ndarray],
                 params: Callable[[SubConfig], float], cache: bool = True,
                 log: Callable[[str], None] | None = None,
                 on_state: Callable[[SearchState, bool], None] | None = None,
                 save_every_s: float = 60.0) -> None:
        settings.check()
        if not limits:
            raise HatConfigError("at least one latency limit is needed")
        self.space, self.s, self.limits = space, settings, list(limits)
        self.fitness, self.latency_fn, self.params_fn = fitness, latency, params
        self.cache, self.log = cache, log or (lambda msg: None)
        self.on_state, self.save_every_s = on_state, save_every_s
        self.choices = space.gene_choices()
        self._lat: dict[str, float] = {}
        self._par: dict[str, float] = {}

    # ----- predictions (memoised) ---------------------------------------------------------
    def _predict(self, cfgs: Sequence[SubConfig]) -> list[tuple[float, float]]:
        keys = [c.key() for c in cfgs]
        todo = {k: c for k, c in zip(keys, cfgs) if k not in self._lat}
        if todo:
            lat = np.asarray(self.latency_fn(list(todo.values())), dtype=np.float64)
            for (k, c), v in zip(todo.items(), lat):
                self._lat[k] = float(v)
                self._par[k] = float(self.params_fn(c))
        return [(self._lat[k], self._par[k]) for k in keys]

    def _first_feasible(self, draw: Callable[[], Genes], limit: Limits, what: str,
                        tries: int) -> Genes:
        """Draw candidates (16 per predictor call) until one satisfies ``limit``."""
        done = 0
        while done < tries:
            batch = [draw() for _ in range(min(16, tries - done))]
            done += len(batch)
            preds = self._predict([self.space.from_genes(g) for g in batch])
            for g, (lat, par) in zip(batch, preds):
                if limit.ok(lat, par):
                    return g
        raise InfeasibleError(
            f"{what}: no SubTransformer within the limit ({limit.describe()}) in {tries} "
            f"draws; loosen the limit or raise max-tries")

    # ----- operators (HAT's) --------------------------------------------------------------
    def _random(self, rng: random.Random, limit: Limits) -> Genes:
        return self._first_feasible(lambda: self.space.sample_genes(rng), limit,
                                    "initial population", self.s.max_tries * 50)

    def _mutate(self, rng: random.Random, parents: list[Genes], limit: Limits) -> Genes:
        parent = parents[rng.randrange(len(parents))]
        p = self.s.mutation_prob

        def draw() -> Genes:
            return [rng.choice(c) if rng.random() < p else g
                    for g, c in zip(parent, self.choices)]

        return self._first_feasible(draw, limit, "mutation", self.s.max_tries)

    def _crossover(self, rng: random.Random, parents: list[Genes], limit: Limits) -> Genes:
        i, j = rng.sample(range(len(parents)), 2)
        a, b = parents[i], parents[j]

        def draw() -> Genes:
            return [x if rng.random() < 0.5 else y for x, y in zip(a, b)]

        return self._first_feasible(draw, limit, "crossover", self.s.max_tries)

    def _initial(self, rng: random.Random) -> list[list[Genes]]:
        """One initial population per limit, each ``population_size`` SubTransformers drawn
        uniformly from those within its limit. With several limits, from the loosest to the
        tightest, a limit first takes the members already drawn for looser limits that
        satisfy it (free: scored once; still uniform within its limit) and draws the rest."""
        s = self.s
        order = sorted(range(len(self.limits)), key=lambda i: -self.limits[i].latency_ms)
        pops: list[list[Genes]] = [[] for _ in self.limits]
        drawn: list[Genes] = []
        for li in order:
            limit = self.limits[li]
            pop = [g for g in drawn if self._feasible(g, limit)][: s.population_size]
            while len(pop) < s.population_size:
                pop.append(self._random(rng, limit))
            drawn += [g for g in pop if g not in drawn]
            pops[li] = pop
        return pops

    def _feasible(self, genes: Genes, limit: Limits) -> bool:
        (lat, par), = self._predict([self.space.from_genes(genes)])
        return limit.ok(lat, par)

    # ----- scoring ------------------------------------------------------------------------
    def _score(self, state: SearchState, genes: list[Genes], iteration: int,
               save: Callable[[], None]) -> list[float]:
        """Losses of ``genes`` in order; with the cache, each SubTransformer is scored once."""
        out: list[float] = []
        last_save = time.monotonic()
        for g in genes:
            cfg = self.space.from_genes(g)
            key = cfg.key()
            if self.cache and key in state.scores:
                state.cache_hits += 1
                out.append(state.scores[key].loss)
                continue
            loss = float(self.fitness(cfg))
            state.evaluations += 1
            if key not in state.scores:
                (lat, par), = self._predict([cfg])
                state.scores[key] = Candidate(key, list(g), loss, lat, par, iteration)
            out.append(loss)
            if time.monotonic() - last_save > self.save_every_s:
                save()  # a kill mid-iteration keeps the scores computed so far
                last_save = time.monotonic()
        return out

    def _parents(self, state: SearchState, li: int, losses: dict[int, list[float]]
                 ) -> list[tuple[float, Genes]]:
        """Own population sorted by loss (stable), plus feasible members of other limits'
        populations not already present; the best ``parent_size``."""
        own = list(zip(losses[li], state.populations[li]))
        pool = [own[i] for i in sorted(range(len(own)), key=lambda i: own[i][0])]
        if len(self.limits) > 1:
            seen = {self.space.from_genes(g).key() for _, g in own}
            for lj in range(len(self.limits)):
                if lj == li:
                    continue
                for loss, g in zip(losses[lj], state.populations[lj]):
                    k = self.space.from_genes(g).key()
                    if k not in seen and self._feasible(g, self.limits[li]):
                        seen.add(k)
                        pool.append((loss, g))
            pool.sort(key=lambda t: t[0])  # stable: own members first among equal losses
        return pool[: self.s.parent_size]

    # ----- the loop -----------------------------------------------------------------------
    def run(self, state: SearchState | None = None) -> SearchState:
        """Run (or continue) the search; returns the final state (``winners`` reads it)."""
        s = self.s
        rng = random.Random(s.seed)
        if state is None or not state.populations:
            state = SearchState(populations=self._initial(rng))
            state.rng = rng.getstate()
            self._emit(state, True)
        else:
            rng.setstate(state.rng)
        while not state.done:
            it = state.iteration
            t0 = time.monotonic()
            ev0, hit0 = state.evaluations, state.cache_hits
            flat = [g for pop in state.populations for g in pop]
            scored = self._score(state, flat, it, lambda: self._emit(state, False))
            losses, o = {}, 0
            for li, pop in enumerate(state.populations):
                losses[li] = scored[o:o + len(pop)]
                o += len(pop)
            parents = [self._parents(state, li, losses) for li in range(len(self.limits))]
            line = {"iteration": it + 1, "seconds": round(time.monotonic() - t0, 3),
                    "evaluations": state.evaluations - ev0, "cache_hits": state.cache_hits - hit0,
                    "best": []}
            for li, par in enumerate(parents):
                best = self.space.from_genes(par[0][1])
                (lat, pm), = self._predict([best])
                line["best"].append({"limit_ms": self.limits[li].latency_ms,
                                     "loss": par[0][0], "latency_ms": lat, "params_m": pm,
                                     "key": best.key()})
            state.history.append(line)
            self.log(_progress_text(line, s.evo_iter))
            if it + 1 >= s.evo_iter:
                state.done = True
                state.populations = [[g for _, g in par] for par in parents]
                state.iteration = it + 1
                self._emit(state, True)
                break
            new_pops = []
            for li, limit in enumerate(self.limits):
                pg = [g for _, g in parents[li]]
                mutants = [self._mutate(rng, pg, limit) for _ in range(s.mutation_size)]
                crosses = [self._crossover(rng, pg, limit) for _ in range(s.crossover_size)]
                new_pops.append(pg + mutants + crosses)
            state.populations = new_pops
            state.iteration = it + 1
            state.rng = rng.getstate()
            self._emit(state, True)
        return state

    def _emit(self, state: SearchState, boundary: bool) -> None:
        if self.on_state is not None:
            self.on_state(state, boundary)

    def winners(self, state: SearchState) -> list[Candidate]:
        """The best SubTransformer of each limit (from the last iteration's parents)."""
        out = []
        for li in range(len(self.limits)):
            best = state.history[-1]["best"][li]
            out.append(state.scores[best["key"]])
        return out

    def lowest_latency(self, n: int = 2000, seed: int = 0) -> tuple[float, SubConfig]:
        """Lowest predicted latency among the space's smallest SubTransformers and ``n`` random
        ones (for a fast infeasibility check)."""
        rng = random.Random(seed)
        cands = [self.space.smallest(a) for a in self.space.decoder_arbitrary_ende_attn_choice]
        cands += [self.space.sample(rng) for _ in range(n)]
        preds = self._predict(cands)
        i = int(np.argmin([p[0] for p in preds]))
        return preds[i][0], cands[i]

    def check_feasible(self, n: int = 2000) -> None:
        """Raise :class:`InfeasibleError` at once when some limit cannot be met."""
        lat, cfg = self.lowest_latency(n)
        smallest_params = min(self.params_fn(self.space.smallest(a))
                              for a in self.space.decoder_arbitrary_ende_attn_choice)
        for limit in self.limits:
            if lat > limit.latency_ms:
                raise InfeasibleError(
                    f"latency-constraint {limit.latency_ms:g} ms cannot be met: the lowest "
                    f"predicted latency found in the search space is {lat:.4g} ms "
                    f"({cfg.describe()}); use a limit above it")
            if limit.params_m is not None and smallest_params > limit.params_m:
                raise InfeasibleError(
                    f"params-constraint {limit.params_m:g}M cannot be met: the smallest "
                    f"SubTransformer has {smallest_params:.4g}M parameters")


def _progress_text(line: dict[str, Any], total: int) -> str:
    bests = "; ".join(f"limit {b['limit_ms']:g} ms: best loss {b['loss']:.4f} at "
                      f"{b['latency_ms']:.4g} ms" for b in line["best"])
    n = line["evaluations"]
    rate = n / line["seconds"] if line["seconds"] > 0 else float("inf")
    return (f"iteration {line['iteration']}/{total} | {bests} | evaluations {n}, cache hits "
            f"{line['cache_hits']} | {line['seconds']:.1f} s ({rate:.2f} candidates/s)")
