"""What the pipeline runs on: the synthetic toy corpus (built in the run folder) or a real corpus
that ``scripts/prepare_data.py`` builds once under ``data/`` (Debian's translation catalogs).
Each task names the committed configs its stages start from and how its BLEU is scored."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hat.errors import HatConfigError
from hat.paths import ROOT


@dataclass(frozen=True)
class PipelineTask:
    """One corpus and the configs the pipeline derives its stage configs from."""

    name: str
    short: str  # file-name prefix of latency datasets, predictors and search YAMLs
    super_config: str  # configs/<name>/<this>: the SuperTransformer (space and recipe)
    latency_config: str  # measuring protocol (the space is the SuperTransformer's)
    predictor_config: str
    evo_config: str
    retrain_config: str = "subtransformer/common.yml"
    bleu_metric: str = "normal"  # hat.bleu --metric
    default_preset: str = "default"
    built_in_run: bool = False  # the corpus is made inside the run folder (toy)
    # further splits every model is scored on, beside test (results: bleu_<split>)
    extra_test_splits: tuple[str, ...] = ()

    @property
    def configs(self) -> Path:
        return ROOT / "configs" / self.name

    def config(self, rel: str) -> Path:
        return self.configs / rel

    def data_bin(self, out: Path) -> Path:
        """The binarized corpus: inside the run (toy) or the shared ``data/<task>/data-bin``."""
        return out / "data" / "data-bin" if self.built_in_run else ROOT / "data" / self.name / \
            "data-bin"


TASKS: dict[str, PipelineTask] = {
    "toy": PipelineTask(
        "toy", "toy", super_config="supertransformer/tiny.yml",
        latency_config="latency_dataset/cpu_epyc.yml",
        predictor_config="latency_predictor/cpu_epyc.yml",
        evo_config="evo_search/toy_cpu_epyc.yml", built_in_run=True),
    **{f"debian.en-{t}": PipelineTask(
        f"debian.en-{t}", f"deben{t}", super_config="supertransformer/space0.yml",
        # the En-De protocol (8-token sentences, interleaved reference) serves both pairs
        latency_config="../debian.en-de/latency_dataset/cpu_epyc.yml",
        predictor_config="../debian.en-de/latency_predictor/cpu_epyc.yml",
        evo_config=f"evo_search/deben{t}_cpu_epyc.yml", bleu_metric="sacre",
        # packages never seen in training (hat/data/debian/packages.py HELD_OUT_PACKAGES)
        extra_test_splits=("test_unseen",), default_preset="debian") for t in ("de", "fr")},
}


def pipeline_task(name: str) -> PipelineTask:
    """A task by name, with the allowed names in the error."""
    if name not in TASKS:
        raise HatConfigError(f"--task {name!r}: allowed {', '.join(TASKS)}")
    return TASKS[name]


def prepared(data_bin: Path) -> bool:
    """Whether ``data_bin`` holds a binarized corpus (dictionaries and train/valid/test)."""
    if not list(data_bin.glob("dict.*.txt")):
        return False
    return all(list(data_bin.glob(f"{split}.*.bin")) for split in ("train", "valid", "test"))
