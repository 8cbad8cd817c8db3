"""The task catalogue: one :class:`TaskInfo` per corpus this project trains on, and everything
that differs between them (languages, data paths, BLEU settings, the latency protocol's sentence
length, the data-preparation recipe, HAT's released archive and models, the pipeline's configs).

Data preparation (:mod:`hat.data.recipes`), BLEU (:mod:`hat.bleu`), the latency model
(:mod:`hat.latency.measure.model`), the downloads (:mod:`hat.download`) and the pipeline
(:mod:`hat.pipeline.tasks`) read their facts from :data:`TASKS`; adding a task is one entry here.

"Task" in this project means such a catalogue entry (``--task wmt14.en-de``). fairseq's task
(the registered ``translation`` task class in :mod:`hat.tasks`) is called the *fairseq task*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from hat.data import recipes
from hat.data.recipes import DataPrepError, TaskRecipe
from hat.errors import HatConfigError

WMT_LATENCY_LENGTH = 30  # HAT's dummy sentence length (source tokens and decode steps)


@dataclass(frozen=True)
class Scoring:
    """How a task's test BLEU is computed (HAT's test settings; ``metric``: hat.bleu --metric)."""

    beam: int = 5
    lenpen: float = 1.0
    remove_bpe: bool = True
    compound_split: bool = True
    lowercase: bool = False
    metric: str = "normal"


@dataclass(frozen=True)
class HatRelease:
    """What HAT published for a task: its preprocessed data and the SuperTransformer arch."""

    url: str  # Dropbox share link of the binarized data (configs/<task>/get_preprocessed.sh)
    archive: str  # the file name HAT saves it under
    model_prefix: str  # the <task> part of HAT's model names (HAT_<prefix>_...)
    super_arch: str  # fairseq arch of the task's SuperTransformer


@dataclass(frozen=True)
class PipelineConfigs:
    """The committed configs (``configs/<task>/...``) the pipeline derives its stages from."""

    short: str  # file-name prefix of latency datasets, predictors and search YAMLs
    super_config: str  # the SuperTransformer (space and recipe)
    latency_config: str  # measuring protocol (the space is the SuperTransformer's)
    predictor_config: str
    evo_config: str
    retrain_config: str = "subtransformer/common.yml"
    default_preset: str = "default"
    built_in_run: bool = False  # the corpus is made inside the run folder (toy)
    extra_test_splits: tuple[str, ...] = ()  # scored beside test (results: bleu_<split>)


@dataclass(frozen=True)
class TaskInfo:
    """One task of the catalogue."""

    name: str  # data/<name>/..., configs/<name>/...
    src: str
    tgt: str
    scoring: Scoring = Scoring()
    latency_length: int = WMT_LATENCY_LENGTH  # dummy sentence length of its latency protocol
    recipe: Callable[[], TaskRecipe] | None = None  # data preparation (None: built otherwise)
    hat: HatRelease | None = None
    pipeline: PipelineConfigs | None = None
    test_ref: str = ""  # detokenized test reference (default data/<name>/tokenized/...)

    @property
    def data_bin(self) -> str:
        return f"data/{self.name}/data-bin"

    @property
    def ref(self) -> str:
        return self.test_ref or f"data/{self.name}/tokenized/test.detok.{self.tgt}"


DROPBOX = "https://www.dropbox.com/s/"  # where HAT published its data and models
_WMT = Scoring(beam=4, lenpen=0.6)


def _debian(tgt: str) -> TaskInfo:
    return TaskInfo(
        f"debian.en-{tgt}", "en", tgt, Scoring(metric="sacre"), recipe=partial(recipes.debian, tgt),
        pipeline=PipelineConfigs(
            f"deben{tgt}", super_config="supertransformer/space0.yml",
            # the En-De protocol (8-token sentences, interleaved reference) serves both pairs
            latency_config="../debian.en-de/latency_dataset/cpu_epyc.yml",
            predictor_config="../debian.en-de/latency_predictor/cpu_epyc.yml",
            evo_config=f"evo_search/deben{tgt}_cpu_epyc.yml", default_preset="debian",
            # packages never seen in training (hat/data/debian/packages.py HELD_OUT_PACKAGES)
            extra_test_splits=("test_unseen",)))


TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("wmt14.en-de", "en", "de", _WMT, recipe=recipes.wmt14_en_de, hat=HatRelease(
        f"{DROPBOX}axfwl1vawper8yk/wmt16_en_de.preprocessed.tgz?dl=0",
        "wmt16_en_de.preprocessed.tgz", "wmt14ende", "transformersuper_wmt_en_de")),
    TaskInfo("wmt14.en-fr", "en", "fr", _WMT, recipe=recipes.wmt14_en_fr, hat=HatRelease(
        f"{DROPBOX}mrs8efjrrnc61xi/wmt14_en_fr.preprocessed.tgz?dl=0",
        "wmt14_en_fr.preprocessed.tgz", "wmt14enfr", "transformersuper_wmt_en_fr")),
    TaskInfo("wmt19.en-de", "en", "de", _WMT, recipe=recipes.wmt19_en_de, hat=HatRelease(
        f"{DROPBOX}q2st4ox2na9z5z2/wmt19_en_de.preprocessed.tgz?dl=0",
        "wmt19_en_de.preprocessed.tgz", "wmt19ende", "transformersuper_wmt19_en_de")),
    TaskInfo("iwslt14.de-en", "de", "en", Scoring(lowercase=True), latency_length=23,
             recipe=recipes.iwslt14_de_en, hat=HatRelease(
                 f"{DROPBOX}t5dqiamjdzahhfc/iwslt14_de_en.preproessed.tgz?dl=0",
                 "iwslt14_de_en.preprocessed.tgz", "iwslt14deen", "transformersuper_iwslt_de_en")),
    _debian("de"),
    _debian("fr"),
    TaskInfo("toy", "src", "tgt", Scoring(remove_bpe=False), test_ref="data/toy/raw/test.detok.tgt",
             pipeline=PipelineConfigs(
                 "toy", super_config="supertransformer/tiny.yml",
                 latency_config="latency_dataset/cpu_epyc.yml",
                 predictor_config="latency_predictor/cpu_epyc.yml",
                 evo_config="evo_search/toy_cpu_epyc.yml", built_in_run=True)),
)}
HAT_TASKS = tuple(n for n, t in TASKS.items() if t.hat)  # the four tasks of HAT's paper


def task_info(name: str, option: str = "--task") -> TaskInfo:
    """The catalogue entry ``name``; else an error listing the tasks."""
    if name not in TASKS:
        raise HatConfigError(f"{option} {name!r}: allowed {', '.join(TASKS)}")
    return TASKS[name]


def task_recipe(name: str) -> TaskRecipe:
    """The data-preparation recipe of task ``name``; else an error listing those that have one."""
    info = TASKS.get(name)
    if info is None or info.recipe is None:
        known = sorted(n for n, t in TASKS.items() if t.recipe)
        raise DataPrepError(f"unknown task {name!r}; allowed tasks: {', '.join(known)}")
    return info.recipe()


def latency_length(arch: str) -> int:
    """The dummy sentence length of the task family ``arch`` belongs to (HAT: 23 for IWSLT
    archs, else 30); the family is the word after ``transformersuper_`` in a task's arch."""
    for t in TASKS.values():
        if t.hat and t.hat.super_arch.removeprefix("transformersuper_").split("_")[0] in str(arch):
            return t.latency_length
    return WMT_LATENCY_LENGTH
