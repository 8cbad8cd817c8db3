"""Several trainings sharing one GPU through CUDA MPS (Multi-Process Service).

Side by side, small trainings leave most of a large GPU idle; time-sliced, the GPU runs one
process's kernels at a time, while under MPS their kernels run at once (4 debian.en-de
SuperTransformer trainings on one H200: 1.48x the target tokens per second,
``bench/results/mps_side_by_side_h200.json``). :func:`mps_daemon` starts an MPS control
daemon of its own (its pipe and log folders in a fresh temporary folder, so no device setting
changes and no other user's daemon is touched), yields the environment its clients need, and
stops it at the end. Where MPS cannot start (no ``nvidia-cuda-mps-control``, a GPU that refuses
it), it says why and yields nothing: the trainings then run time-sliced, as without it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)
CONTROL = "nvidia-cuda-mps-control"


@contextmanager
def mps_daemon(say: Callable[[str], None] = log.info, control: str = CONTROL
               ) -> Iterator[dict[str, str]]:
    """An MPS daemon for the block's child processes: yields ``CUDA_MPS_PIPE_DIRECTORY`` and
    ``CUDA_MPS_LOG_DIRECTORY`` to add to their environment ({} when MPS is unavailable)."""
    exe = shutil.which(control)
    if exe is None:
        say(f"CUDA MPS: {control} not found; the trainings share the GPU time-sliced")
        yield {}
        return
    work = Path(tempfile.mkdtemp(prefix="hat_mps_"))  # short: the pipe path has a length limit
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(work / "pipe"),
           "CUDA_MPS_LOG_DIRECTORY": str(work / "log")}
    for d in env.values():
        os.makedirs(d)
    full = {**os.environ, **env}
    try:
        started = subprocess.run([exe, "-d"], env=full, capture_output=True, text=True,
                                 timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        started = subprocess.CompletedProcess([exe, "-d"], 1, "", str(e))
    if started.returncode != 0:
        say(f"CUDA MPS: {control} -d failed ({(started.stderr or started.stdout).strip()}); "
            "the trainings share the GPU time-sliced")
        shutil.rmtree(work, ignore_errors=True)
        yield {}
        return
    say(f"CUDA MPS: a daemon of this run's own ({work}) serves the trainings")
    try:
        yield env
    finally:
        try:
            subprocess.run([exe], input="quit\n", text=True, env=full, capture_output=True,
                           timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            say(f"CUDA MPS: stopping the daemon failed ({e})")
        shutil.rmtree(work, ignore_errors=True)
