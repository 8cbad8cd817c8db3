"""What the pipeline runs on: the catalogue's tasks (:mod:`hat.corpora`) that name pipeline
configs: the synthetic toy corpus (built in the run folder) or a real corpus that
``scripts/prepare_data.py`` builds once under ``data/`` (Debian's translation catalogs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hat.corpora import TASKS as CATALOGUE
from hat.corpora import PipelineConfigs, TaskInfo
from hat.errors import HatConfigError
from hat.paths import ROOT


@dataclass(frozen=True)
class PipelineTask:
    """A catalogue task the pipeline runs: its name, configs and BLEU metric."""

    name: str
    pipe: PipelineConfigs
    bleu_metric: str = "normal"  # hat.bleu --metric

    @property
    def configs(self) -> Path:
        return ROOT / "configs" / self.name

    def config(self, rel: str) -> Path:
        return self.configs / rel

    def data_bin(self, out: Path) -> Path:
        """The binarized corpus: inside the run (toy) or the shared ``data/<task>/data-bin``."""
        return out / "data" / "data-bin" if self.pipe.built_in_run else ROOT / self.info.data_bin

    @property
    def info(self) -> TaskInfo:
        return CATALOGUE[self.name]


TASKS: dict[str, PipelineTask] = {
    name: PipelineTask(name, t.pipeline, t.scoring.metric)
    for name, t in CATALOGUE.items() if t.pipeline}


def pipeline_task(name: str) -> PipelineTask:
    """A task by name, with the allowed names in the error."""
    if name not in TASKS:
        raise HatConfigError(f"--task {name!r}: allowed {', '.join(TASKS)}")
    return TASKS[name]


def prepared(data_bin: Path, splits: tuple[str, ...] = ("train", "valid", "test")) -> bool:
    """Whether ``data_bin`` holds a binarized corpus (dictionaries and every split of
    ``splits``)."""
    if not list(data_bin.glob("dict.*.txt")):
        return False
    return all(list(data_bin.glob(f"{split}.*.bin")) for split in splits)
