"""``python -m hat.pipeline --out runs/quickstart``: HAT's whole pipeline on the toy corpus
(``--task debian.en-de``: on Debian's translation catalogs, on a GPU)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hat.atomic import check_writable
from hat.cli import run_cli
from hat.errors import HatConfigError
from hat.pipeline import PRESETS, STAGES, STATE, run_pipeline
from hat.pipeline.context import StageError
from hat.pipeline.tasks import TASKS


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(
        prog="python -m hat.pipeline",
        description="Train a SuperTransformer, measure latency on this machine, train the "
                    "predictor, search under 2-3 latency limits, retrain the found "
                    "SubTransformers and uniform Transformer baselines from scratch, and "
                    "report BLEU and measured latency (synthetic toy corpus, or --task). Run the "
                    "same command again to continue an interrupted run.",
        epilog="example: python -m hat.pipeline --out runs/quickstart   (2-core CPU: 6.5-17 "
               "min with the machine's load; --tiny: a 1.5-3 min workflow check)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (everything goes there)")
    ap.add_argument("--task", choices=sorted(TASKS), default="toy",
                    help="corpus: toy (synthetic, made in --out), debian.en-de / debian.en-fr "
                         "(Debian's translation catalogs; when data/<task>/data-bin is missing "
                         "the first stage builds it with scripts/prepare_data.py: ~600 MB of "
                         "packages from Debian's mirror, ~5 min; default preset 'debian', a GPU)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="sizes: default (2-core CPU, ~7 min idle), tiny (a workflow check, "
                         "~1.5-3 min, "
                         "barely trained models), cuda "
                         "(toy on one GPU), debian (a Debian corpus on a GPU: about 26 min "
                         "on one H200, measured 2026-12-04); default: the "
                         "task's ('cuda' for toy with --device cuda)")
    ap.add_argument("--tiny", action="store_true", help="same as --preset tiny")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="where to train, measure and search (default: the preset's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=None,
                    help="models retrained / scored at once (CPU: one thread each; default: the "
                         "preset's, 2, or 5 for debian)")
    ap.add_argument("--gpus", type=int, default=1,
                    help="GPUs to use (cuda): latency stages beside the SuperTransformer "
                         "training, retrainings spread over them")
    ap.add_argument("--no-mps", dest="mps", action="store_false",
                    help="cuda, more retrainings at once than GPUs: share each GPU time-sliced "
                         "instead of through a CUDA MPS daemon of the run's own (MPS: 1.48x the "
                         "tokens/s of 4 side-by-side trainings on one H200)")
    ap.add_argument("--limits-below", type=int, default=None, metavar="N",
                    help="N more latency limits, evenly spaced below the baselines' (their "
                         "found models are retrained too; the report's winners_fidelity is "
                         "HAT's fidelity check over all found models; debian: 2 gives "
                         "its 5 winners, 5 retrainings at once instead of 3). Default: the "
                         "preset's, 0")
    ap.add_argument("--stop-after", choices=STAGES, default=None,
                    help="end after this stage, in the run's order (the debian preset on one GPU "
                         "measures latency and picks the baselines first, then retrains them "
                         "beside the SuperTransformer); the same command without it continues")
    args = ap.parse_args(argv)
    name = "tiny" if args.tiny else args.preset

    def body() -> int:
        check_out(args.out)
        try:
            run_pipeline(args.out, name, device=args.device, seed=args.seed, workers=args.jobs,
                         say=lambda m: print(m, flush=True), task=args.task, gpus=args.gpus,
                         stop_after=args.stop_after, mps=args.mps,
                         limits_below=args.limits_below)
        except StageError as e:  # a stage's command failed: its log says why
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0

    return run_cli(body, os_note=f" (the stages finished before it are kept in "
                                 f"{Path(args.out) / STATE}: the same command continues)",
                   interrupted=f"run the same command again to continue ({args.out}/"
                               "pipeline.json records the finished stages)")


def check_out(out: str) -> None:
    """--out must be a folder (new, or a run folder to continue) this process can write into."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise HatConfigError(f"--out {out}: this is a file, not a folder; give a new folder (or "
                             "the run folder of the run to continue)")
    check_writable(path / STATE, f"--out {out}: the run state")


if __name__ == "__main__":
    sys.exit(main())
