"""What to tell a user whose data directory is missing."""

from __future__ import annotations

import os
from pathlib import Path

from hat.corpora import HAT_TASKS


def how_to_get(data_dir: str | os.PathLike) -> str:
    """The command that creates ``data_dir`` (the configs' ``data/<task>/data-bin`` layout)."""
    path = Path(data_dir)
    task = path.parent.name if path.name == "data-bin" else path.name
    if task == "toy":
        return f"make it with: python scripts/make_toy_corpus.py --out {path.parent}"
    if task in HAT_TASKS:
        return (f"prepare it with `bash configs/{task}/preprocess.sh` (downloads and preprocesses "
                f"the corpus) or fetch HAT's preprocessed copy with `bash configs/{task}/"
                "get_preprocessed.sh` (add --mirror DIR to take the archive from a local folder)")
    return ("binarize a corpus into it with fairseq-preprocess (see scripts/prepare_data.py "
            "--help for the prepared tasks)")
