#!/usr/bin/env python
"""Where a SuperTransformer training update synchronises the host with the GPU (CUDA only).

Runs train.py's Trainer on ``bench.speed.train_profile``'s recipe for a few updates under
``torch.cuda.set_sync_debug_mode("warn")`` and counts every warning by the Python frames that
issued it (the deepest frames outside torch), per update.

python -m bench.speed.sync_sites --updates 5 --out /tmp/sync_sites.json
"""

from __future__ import annotations

import argparse
import collections
import json
import traceback
import warnings
from pathlib import Path

from bench.speed.train_profile import VARIANTS, build_trainer, child_args, task_recipe
from bench.studies.debian_convergence import TASKS
from hat.atomic import atomic_write_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="debian.en-de", choices=sorted(TASKS))
    ap.add_argument("--updates", type=int, default=5)
    ap.add_argument("--variant", default="today", choices=sorted(VARIANTS))
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        raise SystemExit("sync_sites needs a CUDA GPU (sync debug mode is CUDA's)")
    cfg_dir, recipe = task_recipe(a.task)
    trainer, itr = build_trainer(child_args(cfg_dir, recipe, VARIANTS[a.variant], None,
                                            "/tmp/hat_sync_sites"))
    it = iter(itr.next_epoch_itr(shuffle=True))
    for _ in range(3):
        trainer.train_step([next(it)])
    sites: collections.Counter = collections.Counter()

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename
                  and "warnings.py" not in f.filename]
        sites[" <- ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}"
                          for f in reversed(frames[-3:]))] += 1

    warnings.showwarning = record
    warnings.simplefilter("always")
    torch.cuda.set_sync_debug_mode("warn")
    for _ in range(a.updates):
        trainer.train_step([next(it)])
    torch.cuda.set_sync_debug_mode("default")
    per = {k: v / a.updates for k, v in sites.most_common()}
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "task": a.task, "recipe": recipe, "variant": a.variant, "updates": a.updates,
           "syncs_per_update": sum(per.values()), "sites": per}
    atomic_write_text(a.out, json.dumps(out, indent=1))
    print(json.dumps(out, indent=1)[:6000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
