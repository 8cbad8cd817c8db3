"""The machine a latency is measured on (recorded in every dataset's sidecar)."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict[str, Any]:
    """CPU model (from /proc/cpuinfo), core count, GPU name, torch/python versions."""
    info: dict[str, Any] = {
        "hostname": platform.node(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def hardware(device: torch.device) -> dict[str, Any]:
    """What must not change between the sessions of one dataset."""
    info = machine_info(device)
    keys = ("cpu", "cpu_count", "torch") + (("gpu",) if device.type == "cuda" else ())
    return {k: info[k] for k in keys}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
