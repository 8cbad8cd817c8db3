"""Running the stages' command lines as child processes: one at a time or several at once, each
into its log, with a heartbeat of its progress; every command is recorded in ``DIR/commands.sh``
and dies with the pipeline."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hat.paths import ROOT
from hat.pipeline.context import Context, StageError
from hat.yamlio import write_yaml


def absolute(path: Path | str) -> str:
    """A path as the stage configs and records write it: absolute, so that every command (and
    a resumed run) works from any directory."""
    return str(Path(path).absolute())


def script(name: str) -> str:
    """A root CLI script's path."""
    return absolute(ROOT / name)


def _prctl() -> Callable[..., int] | None:
    """Linux's prctl, looked up once in the parent (a forked child must not import)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: children outlive a killed pipeline
        return None


_PRCTL = _prctl()
PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None] | None:
    """For ``Popen(preexec_fn=...)``: the child gets SIGTERM when the pipeline process that
    started it dies, even by SIGKILL (and exits at once if that already happened)."""
    if _PRCTL is None:
        return None
    prctl = _PRCTL

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return arm


def run_command(ctx: Context, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                label: str = "") -> None:
    """Run one CLI command, its output into ``log``; a heartbeat line every 15 s shows the
    last line it wrote. Raises :class:`StageError` with the log's tail when it fails."""
    argv = [str(a) for a in argv]
    shown = " ".join(shlex.quote(a) for a in ["python", *argv[1:]])
    with open(ctx.path("commands.sh"), "a") as f:
        f.write(shown + "\n")
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                           full_env.get("PYTHONPATH")]))
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                preexec_fn=_die_with(os.getpid()))
        while True:
            try:
                rc = proc.wait(timeout=15)
                break
            except subprocess.TimeoutExpired:
                ctx.say(f"  {label or Path(argv[1]).name}: {time.monotonic() - t0:.0f} s, "
                        f"{progress(log)}")
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                raise
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise StageError(f"command failed (exit {rc}): {shown}\nlast lines of {log}:\n{tail}")


PROGRESS = (  # (pattern of a stage CLI's log, what it says), the last match in the log counts
    (re.compile(r"num_updates[\"']?[=:]\s*[\"']?(\d+)"), "update {0}"),
    (re.compile(r"iteration (\d+)/(\d+)"), "iteration {0}/{1}"),
    (re.compile(r"(\d+)/(\d+) \["), "{0}/{1}"),  # a tqdm bar: rows, sentences, steps
)


def progress(log: Path) -> str:
    """Where a stage's command is: its last update, search iteration or progress-bar count
    (with the loss of a training), else its last line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    tail = text[-20000:]
    for pattern, fmt in PROGRESS:
        found = list(pattern.finditer(tail))
        if found:
            said = fmt.format(*found[-1].groups())
            loss = list(re.finditer(r"\bloss[\"']?[=:]\s*[\"']?([\d.]+)", tail))
            if fmt.startswith("update") and loss:
                said += f", loss {loss[-1].group(1)}"
            return said
    return last_line(log)


def last_line(log: Path, width: int = 110) -> str:
    """The last non-empty line (or tqdm update) of a log, shortened."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    parts = [p.strip() for p in text.replace("\r", "\n").splitlines() if p.strip()]
    line = parts[-1] if parts else ""
    return line if len(line) <= width else line[: width - 3] + "..."


Job = tuple[str, list[str], Path] | tuple[str, list[str], Path, dict[str, str]]


def run_parallel(ctx: Context, jobs: list[Job], workers: int, env: dict[str, str],
                 on_done: Callable[[str], None] | None = None,
                 done_at_once: bool = False) -> None:
    """Run labelled commands, ``workers`` at a time (a job's own environment, its 4th item,
    adds to ``env``: e.g. the GPU it runs on); ``on_done(label)`` runs after each success in
    that job's worker while the other jobs go on: one at a time, or (``done_at_once``, for a
    thread-safe ``on_done``) as soon as each job ends."""
    errors: list[BaseException] = []
    pending = list(jobs)
    lock, done_lock = threading.Lock(), threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                label, argv, log, *own = pending.pop(0)
            try:
                t0 = time.monotonic()
                run_command(ctx, argv, log, env={**env, **(own[0] if own else {})},
                            label=label)
                ctx.say(f"  {label}: done in {time.monotonic() - t0:.0f} s")
                if on_done is not None and done_at_once:
                    on_done(label)
                elif on_done is not None:
                    with done_lock:
                        on_done(label)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                with lock:
                    errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def write_config(path: Path, keys: dict[str, Any], header: str) -> Path:
    """A YAML config a stage's CLI reads (HAT's keys), with a comment saying what it is."""
    return write_yaml(path, keys, header, width=100)


def python() -> str:
    """The Python that runs the stages' command lines (this one)."""
    return sys.executable
