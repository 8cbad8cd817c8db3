#!/usr/bin/env python
"""Write and binarize the synthetic ``src``->``tgt`` corpus (see hat/data/toy_corpus.py)."""

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hat.data.toy_corpus import make_toy_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("data/toy"), help="output directory")
    p.add_argument("--n-train", type=int, default=6000)
    p.add_argument("--n-valid", type=int, default=300)
    p.add_argument("--n-test", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--separate-dictionaries", action="store_true",
                   help="one dictionary per language instead of a joined one")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    start = time.monotonic()
    data_bin = make_toy_corpus(args.out, n_train=args.n_train, n_valid=args.n_valid,
                               n_test=args.n_test, seed=args.seed,
                               joined_dictionary=not args.separate_dictionaries)
    print(f"{data_bin} ({time.monotonic() - start:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
