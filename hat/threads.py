"""How many CPU threads torch uses when a run is on the CPU.

torch's default (one thread per core) is slow when the cores are busy with other work: OpenMP
threads then wait for each other (on a 2-core machine with another job running, a toy training
took 367 s with 2 threads and 73 s with 1). So CPU runs use the cores that are free now, unless
``OMP_NUM_THREADS`` says otherwise.
"""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger("hat")


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def choose_cpu_threads(cores: int | None = None, load: float | None = None,
                       env: dict[str, str] | None = None) -> tuple[int, str]:
    """(threads, why): ``OMP_NUM_THREADS`` when set, else the cores not busy (1-min load)."""
    env = os.environ if env is None else env
    value = env.get("OMP_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n >= 1:
            return n, "OMP_NUM_THREADS"
        logger.warning("ignoring OMP_NUM_THREADS=%r (not a positive integer)", value)
    cores = available_cores() if cores is None else cores
    load = os.getloadavg()[0] if load is None else load
    free = max(1, min(cores, cores - round(load)))
    return free, f"{cores} cores, load {load:.1f}; set OMP_NUM_THREADS to choose"


def use_cpu_threads() -> int:
    """Set torch's CPU thread count for this run (see the module doc) and log it."""
    n, why = choose_cpu_threads()
    torch.set_num_threads(n)
    logger.info("CPU: %d torch thread%s (%s)", n, "" if n == 1 else "s", why)
    return n
