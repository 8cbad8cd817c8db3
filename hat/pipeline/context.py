"""Where a pipeline run lives (its folder, preset, task, GPUs) and the paths and training keys
every stage derives from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hat.errors import HatConfigError
from hat.pipeline.presets import Preset
from hat.pipeline.tasks import TASKS, PipelineTask


class StageError(HatConfigError):
    """A stage's command failed (its log says why)."""


@dataclass
class Context:
    """Where a pipeline run lives and how it reports."""

    out: Path
    preset: Preset
    say: Callable[[str], None]
    seed: int = 1
    task: PipelineTask = TASKS["toy"]
    gpus: int = 1  # GPUs to spread over (cuda): the latency stages and retrainings use several
    mps: bool = True  # share a GPU between side-by-side retrainings through CUDA MPS
    # the client environment of an MPS daemon already serving this run's trainings (set while
    # the baselines retrain beside the SuperTransformer): every training child joins it
    shared_env: dict[str, str] | None = None

    def path(self, *parts: str) -> Path:
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def hw(self) -> str:
        return "gpu" if self.preset.device == "cuda" else "cpu"

    @property
    def data_bin(self) -> Path:
        return self.task.data_bin(self.out)

    @property
    def latency_gpu(self) -> int:
        """The GPU that measures latency (the last one: the SuperTransformer trains on 0)."""
        return self.gpus - 1

    def gpu_env(self, index: int) -> dict[str, str]:
        """Environment that puts a child process on GPU ``index`` (nothing for one GPU/CPU)."""
        shared = dict(self.shared_env or {})
        if self.preset.device != "cuda" or self.gpus < 2:
            return shared
        return {**shared, "CUDA_VISIBLE_DEVICES": str(index % self.gpus)}

    def train_keys(self, keys: dict[str, Any]) -> dict[str, Any]:
        """The preset's batch, precision and warm-up applied to a training config."""
        p = self.preset
        if p.device == "cuda":
            keys.pop("cpu", None)
            keys["max-tokens"] = p.max_tokens or 8192
        elif p.max_tokens:
            keys["max-tokens"] = p.max_tokens
        if p.fp16 and p.device == "cuda":
            keys["fp16"] = True
        if p.warmup_updates is not None:
            keys["warmup-updates"] = p.warmup_updates
        # checkpoints every save-interval-updates and at the end, not after every epoch (a
        # real corpus has short epochs: per-epoch saves would cost more than the training)
        keys.update({"no-epoch-checkpoints": True, "save-interval": 1000,
                     "keep-interval-updates": 1, "log-interval": 25})
        keys.pop("keep-last-epochs", None)
        return keys

    @property
    def super_yaml(self) -> Path:
        return self.out / "configs" / "supertransformer.yml"

    @property
    def super_ckpt(self) -> Path:
        return self.out / "checkpoints" / "supertransformer" / "checkpoint_last.pt"

    @property
    def latency_csv(self) -> Path:
        return self.out / "latency" / f"{self.task.pipe.short}_{self.hw}_all.csv"

    @property
    def predictor(self) -> Path:
        return self.out / "latency" / f"{self.task.pipe.short}_{self.hw}.pt"

    @property
    def search_yaml(self) -> Path:
        return self.out / "search" / f"{self.task.pipe.short}_{self.hw}.yml"
