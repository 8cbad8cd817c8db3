"""``python -m hat.pipeline --out runs/quickstart``: HAT's whole pipeline on the toy corpus."""

from __future__ import annotations

import argparse
import sys

from hat.errors import HatConfigError
from hat.pipeline import PRESETS, run_pipeline
from hat.pipeline.stages import StageError


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(
        prog="python -m hat.pipeline",
        description="Train a SuperTransformer, measure latency on this machine, train the "
                    "predictor, search under 2-3 latency limits, retrain the found "
                    "SubTransformers and a uniform Transformer baseline from scratch, and "
                    "report BLEU and measured latency (synthetic toy corpus). Run the same "
                    "command again to continue an interrupted run.")
    ap.add_argument("--out", required=True, help="output folder (everything goes there)")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="sizes: default (2-core CPU, ~10 min), tiny (a test, ~2 min), cuda "
                         "(one GPU, larger); default: 'cuda' with --device cuda, else 'default'")
    ap.add_argument("--tiny", action="store_true", help="same as --preset tiny")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="where to train, measure and search (default: the preset's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2,
                    help="models retrained / scored at once (CPU: one thread each)")
    args = ap.parse_args(argv)
    name = "tiny" if args.tiny else args.preset or ("cuda" if args.device == "cuda"
                                                      else "default")
    try:
        run_pipeline(args.out, name, device=args.device, seed=args.seed, workers=args.jobs,
                     say=lambda m: print(m, flush=True))
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except HatConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"| interrupted: run the same command again to continue ({args.out}/pipeline.json "
              "records the finished stages)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
