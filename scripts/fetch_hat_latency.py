#!/usr/bin/env python
"""Fetch HAT's published latency datasets and trained predictors into ``latency_dataset/``.

Downloads ``latency_dataset/<name>_all.csv`` and ``latency_dataset/predictors/<name>.pt`` from
HAT's public GitHub repository (MIT licence), or copies them from a local folder with
``--mirror DIR`` (looked up as ``DIR/<name>_all.csv``, ``DIR/latency/<name>_all.csv``,
``DIR/predictors/<name>.pt``). The CSVs land in ``<out>/<name>_all.csv``; HAT's predictors in
``<out>/predictors/hat/<name>.pt`` so that training ours (``<out>/predictors/<name>.pt``) never
overwrites them. Writes are atomic; every file is validated after fetching (CSV: full
:mod:`hat.latency.csvio` validation; predictor: HAT's state-dict keys and shapes).
These files are third-party data: never commit them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hat.latency.csvio import HAT_LATENCY_DATASETS  # noqa: E402

BASE_URL = (
    "https://raw.githubusercontent.com/mit-han-lab/hardware-aware-transformers/master/"
    "latency_dataset/"
)
NAMES = HAT_LATENCY_DATASETS


def _mirror_candidates(mirror: Path, rel: str) -> list[Path]:
    name = Path(rel).name
    if rel.startswith("predictors/"):
        return [mirror / rel, mirror / name]
    return [mirror / rel, mirror / "latency" / rel, mirror / name]


def local_path(rel: str, out_dir: Path) -> Path:
    """Where a file of HAT's latency_dataset/ (``rel``) is stored locally."""
    if rel.startswith("predictors/"):
        return out_dir / "predictors" / "hat" / Path(rel).name
    return out_dir / rel


def fetch_one(rel: str, out_dir: Path, mirror: Path | None, timeout: float) -> Path:
    """Fetch one file (path relative to HAT's latency_dataset/) into ``out_dir``."""
    from hat.download.transfer import FetchError, copy_file, download_url

    dest = local_path(rel, out_dir)
    if mirror is not None:
        src = next((p for p in _mirror_candidates(mirror, rel) if p.is_file()), None)
        if src is None:
            raise FileNotFoundError(
                f"{rel}: not found in mirror {mirror} (looked at "
                + ", ".join(str(p) for p in _mirror_candidates(mirror, rel)) + ")"
            )
        copy_file(src, dest, lambda tmp: None)
    else:
        try:  # the one URL fetcher (atomic, Content-Length checked)
            download_url(BASE_URL + rel, dest, timeout=timeout)
        except FetchError as e:
            raise OSError(str(e)) from None
    return dest


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="latency_dataset", help="output folder (latency_dataset)")
    ap.add_argument("--mirror", default=None, help="copy from this local folder instead")
    ap.add_argument("--names", nargs="+", default=list(NAMES), help="datasets to fetch")
    ap.add_argument("--no-predictors", action="store_true", help="only the CSVs")
    ap.add_argument("--force", action="store_true", help="re-fetch files that already exist")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-download timeout (s)")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hat.errors import HatConfigError
    from hat.latency.csvio import read_latency_table
    from hat.latency.predict.predictor import check_predictor_file

    out = Path(args.out)
    mirror = Path(args.mirror) if args.mirror else None
    failures = 0
    for name in args.names:
        rels = [f"{name}_all.csv"] + ([] if args.no_predictors else [f"predictors/{name}.pt"])
        for rel in rels:
            dest = local_path(rel, out)
            if dest.exists() and not args.force:
                print(f"exists   {dest}")
                continue
            try:
                fetch_one(rel, out, mirror, args.timeout)
                if rel.endswith(".csv"):
                    table = read_latency_table(dest)
                    print(f"fetched  {dest} ({len(table)} rows, validated)")
                else:
                    check_predictor_file(dest)
                    print(f"fetched  {dest} (validated)")
            except HatConfigError as e:  # LatencyDataError / PredictorError
                dest.unlink(missing_ok=True)
                print(f"INVALID  {rel}: {e}", file=sys.stderr)
                failures += 1
            except (OSError, ValueError) as e:
                print(f"FAILED   {rel}: {e}", file=sys.stderr)
                failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
